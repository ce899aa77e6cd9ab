"""End-to-end evaluator: tiny in-test agents, the CLI, written files, zoo, transfer score, clean errors."""

import csv
import json

import imageio.v2 as imageio
import numpy as np
import pytest
from sb3_contrib import RecurrentPPO

from rims_rl.cli.evaluate import EXIT_NOTHING_TO_EVALUATE, main
from rims_rl.evaluation import atomic_write_text, new_output_dir, transfer_score
from rims_rl.evaluation.transfer import curve_area
from rims_rl.zoo import add_to_zoo, list_zoo, load_zoo_agent
from rims_rl.safe_io import save_model


@pytest.fixture(scope="module")
def agents(tmp_path_factory):
    """A tiny RIMs agent and a tiny LSTM agent on CartPole, trained for 64 steps each."""
    from rims_rl.policies import MlpRimsPolicy

    root = tmp_path_factory.mktemp("agents")
    paths = {}
    for core, core_kwargs in (("rims", {"n_units": 4, "k_active": 2, "unit_size": 8}), ("lstm", {"hidden_size": 16})):
        model = RecurrentPPO(
            MlpRimsPolicy,
            "CartPole-v1",
            n_steps=32,
            batch_size=32,
            n_epochs=1,
            seed=0,
            device="cpu",
            policy_kwargs={"core": core, "core_kwargs": core_kwargs, "net_arch": []},
        )
        model.learn(64)
        paths[core] = root / f"{core}.zip"
        save_model(model, paths[core])
    return paths


def test_end_to_end_files_written_and_readable(agents, tmp_path, capsys):
    out_root = tmp_path / "eval"
    argv = [
        "--rims",
        str(agents["rims"]),
        "--lstm",
        str(agents["lstm"]),
        "--env",
        "CartPole-v1",
        "-n",
        "3",
        "--n-envs",
        "2",
        "--ref-score",
        "500",
        "--n-bootstrap",
        "200",
        "-o",
        str(out_root),
        "-q",
    ]
    assert main(argv) == 0
    (out,) = list(out_root.iterdir())
    for name in ("report.md", "scores.csv", "episodes.csv", "ratios.csv", "results.json", "ratios.png", "splits.png"):
        assert (out / name).is_file(), name
    data = json.loads((out / "results.json").read_text())
    row = data["comparison"]["envs"][0]
    assert row["env"] == "CartPole-v1" and row["s_ref"] == 500.0 and row["n_episodes"] == 3
    with open(out / "episodes.csv") as f:
        episodes = list(csv.DictReader(f))
    assert len(episodes) == 15  # 3 episodes x (rims, lstm) x (sampled, greedy) + 3 random
    rims_returns = [float(e["return"]) for e in episodes if e["core"] == "rims" and e["actions"] == "sampled"]
    assert row["s_rims"] == pytest.approx(np.mean(rims_returns))
    expected_ratio = (row["s_rims"] - row["s_lstm"]) / (max(row["s_lstm"], 500.0) - row["s_random"])
    assert row["ratio"] == pytest.approx(expected_ratio)
    assert imageio.imread(out / "ratios.png").ndim == 3
    assert "Score ratio" in capsys.readouterr().out


def test_video_with_active_unit_panel(agents, tmp_path):
    video = tmp_path / "ep.mp4"
    argv = [
        "--rims",
        str(agents["rims"]),
        "--env",
        "CartPole-v1",
        "-n",
        "1",
        "--no-random",
        "--video",
        str(video),
        "--video-steps",
        "20",
        "-o",
        str(tmp_path / "eval"),
        "-q",
    ]
    assert main(argv) == 0
    frames = imageio.mimread(video)
    assert len(frames) >= 5
    assert 600 < frames[0].shape[1] < 1400  # CartPole frame (600 wide) plus the unit panel


def test_no_arguments_without_zoo_agents(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RIMS_RL_ZOO", str(tmp_path))
    assert main([]) == EXIT_NOTHING_TO_EVALUATE
    out = capsys.readouterr().out
    assert "No pretrained" in out and "train.py --algo rims_ppo" in out and "train.py --algo lstm_ppo" in out


@pytest.mark.parametrize(
    "argv_tail, fragment",
    [
        (["--rims", "missing.zip", "--lstm", "missing2.zip"], "checkpoint not found"),
        (["--rims", "no-such-zoo-agent", "--lstm", "x.zip"], "neither a run folder"),
    ],
)
def test_cli_errors_are_one_line(argv_tail, fragment, tmp_path, capsys):
    assert main([*argv_tail, "--env", "CartPole-v1", "-o", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert fragment in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_cli_corrupt_and_mismatched_checkpoints(agents, tmp_path, capsys):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"garbage")
    assert main(["--agent", str(bad), "--env", "CartPole-v1", "-o", str(tmp_path), "-q"]) == 1
    assert "corrupt" in capsys.readouterr().err
    # CartPole agent on Acrobot: 4-dim vs 6-dim observations
    assert main(["--agent", str(agents["lstm"]), "--env", "Acrobot-v1", "-o", str(tmp_path), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert "observation space mismatch" in err and "(4,)" in err and "(6,)" in err and len(err.splitlines()) == 1


def test_zoo_roundtrip_and_integrity(agents, tmp_path):
    entry = add_to_zoo(
        agents["lstm"], "cartpole/lstm_ppo/seed0", "lstm_ppo", "lstm", "cartpole", "CartPole-v1", 0, root=tmp_path
    )
    assert [e.id for e in list_zoo(tmp_path)] == [entry.id]
    model = load_zoo_agent(entry.id, root=tmp_path)
    assert model.observation_space.shape == (4,)
    with pytest.raises(ValueError, match="already"):
        add_to_zoo(agents["lstm"], entry.id, "lstm_ppo", "lstm", "cartpole", "CartPole-v1", root=tmp_path)
    with pytest.raises(KeyError, match="did you mean"):
        load_zoo_agent("cartpole/lstm_ppo/seed1", root=tmp_path)
    with open(tmp_path / entry.path, "ab") as f:
        f.write(b"tampered")
    with pytest.raises(ValueError, match="sha256 mismatch"):
        load_zoo_agent(entry.id, root=tmp_path)


def test_output_dirs_never_overwrite(tmp_path):
    first = new_output_dir(tmp_path, "gridworld-pickup")
    atomic_write_text(first / "results.json", "{}")
    second = new_output_dir(tmp_path, "gridworld-pickup")
    assert (first.name, second.name) == ("gridworld-pickup_1", "gridworld-pickup_2")
    assert (first / "results.json").read_text() == "{}"
    assert not [p for p in first.iterdir() if p.name.endswith(".tmp")]


def test_repository_zoo_manifest_is_valid():
    list_zoo()  # parses; may be empty


def test_repository_zoo_agents_load_and_act_on_their_settings_envs():
    """Every zoo agent acts on its setting's training split built as the evaluator builds it (an Atari agent sees
    stacked 84x84 frames, which a bare ``gym.make`` of its ALE id does not give)."""
    from rims_rl.envs import make_eval_vec_env
    from rims_rl.evaluation.rollout import check_spaces

    for entry in list_zoo():
        model = load_zoo_agent(entry.id)  # checks the sha256 first
        assert model.policy.core_name == entry.core
        env = make_eval_vec_env(entry.setting, "train", n_envs=1)
        try:
            check_spaces(model, env, entry.id, entry.setting)  # images: as given or channel-first (SB3 transposes)
            obs = env.reset()
            action, _ = model.predict(obs, state=None, episode_start=np.ones(1, dtype=bool))
            assert env.action_space.contains(int(action[0])), entry.id
        finally:
            env.close()


def _run(folder, timesteps, scores):
    folder.mkdir()
    results = np.repeat(np.asarray(scores, dtype=float)[:, None], 2, axis=1)
    np.savez(folder / "evaluations.npz", timesteps=np.asarray(timesteps), results=results)
    return folder


def test_transfer_score(tmp_path, capsys):
    # fine-tuned: constant 2 over [0, 100] -> area 200; scratch: 0 -> 2 linearly -> area 100
    fine = _run(tmp_path / "fine", [0, 50, 100, 150], [2, 2, 2, 2])
    scratch = _run(tmp_path / "scratch", [0, 50, 100], [0, 1, 2])
    result = transfer_score([fine], [scratch])
    assert result.until == 100 and result.area_finetuned == pytest.approx(200) and result.area_scratch == pytest.approx(100)
    assert result.score == pytest.approx(2.0)
    assert curve_area(np.array([0.0, 10.0]), np.array([1.0, 3.0]), until=5.0) == pytest.approx(7.5)
    assert main(["--transfer-finetuned", str(fine), "--transfer-scratch", str(scratch), "-o", str(tmp_path / "o")]) == 0
    assert "2.000" in capsys.readouterr().out


@pytest.mark.slow
def test_gridworld_setting_split(tmp_path):
    """An untrained MiniGrid agent pair on one held-out split of the gridworld setting (S_ref = 1)."""
    from rims_rl.envs import make_eval_vec_env
    from rims_rl.policies import MlpRimsPolicy
    from rims_rl.torch_layers import MiniGridCNN

    env = make_eval_vec_env("gridworld-pickup", "train", n_envs=1)
    paths = []
    for core, kw in (("rims", {"n_units": 4, "k_active": 2, "unit_size": 8}), ("lstm", {"hidden_size": 16})):
        policy_kwargs = {"core": core, "core_kwargs": kw, "features_extractor_class": MiniGridCNN, "net_arch": []}
        model = RecurrentPPO(MlpRimsPolicy, env, n_steps=16, batch_size=16, device="cpu", policy_kwargs=policy_kwargs)
        paths.append(tmp_path / f"{core}.zip")
        save_model(model, paths[-1])
    argv = ["--rims", str(paths[0]), "--lstm", str(paths[1]), "--splits", "novel-distractors", "-n", "2"]
    assert main([*argv, "--n-bootstrap", "100", "-o", str(tmp_path / "eval"), "-q"]) == 0
    (out,) = list((tmp_path / "eval").iterdir())
    data = json.loads((out / "results.json").read_text())
    assert data["comparison"]["envs"][0]["env"] == "novel-distractors"
    assert data["comparison"]["envs"][0]["s_ref"] == 1.0
    assert (out / "splits.png").is_file()


def _cartpole_zoo(agents, tmp_path, monkeypatch, cores_by_setting, budget=None):
    """
    Settings ``cartpole-<name>`` (CartPole, splits ``train`` and ``same``, 2 episodes, S_ref 500) and a zoo holding the
    tiny agents of the given cores for each, as ``<name>/<core>``; ``budget``: the manifest's evaluation defaults.
    """
    settings = tmp_path / "settings"
    settings.mkdir()
    for setting in cores_by_setting:
        (settings / f"{setting}.yml").write_text(f"name: {setting}\nkind: gym\ntrain: CartPole-v1\n"
                                                 "heldout: {same: CartPole-v1}\nn_eval_episodes: 2\ns_ref: 500\n")  # fmt: skip
    monkeypatch.setenv("RIMS_RL_SETTINGS_DIR", str(settings))
    zoo = tmp_path / "zoo"
    monkeypatch.setenv("RIMS_RL_ZOO", str(zoo))
    for setting, cores in cores_by_setting.items():
        for core in cores:
            agent_id = f"{setting.removeprefix('cartpole-')}/{core}"
            add_to_zoo(agents[core], agent_id, f"{core}_ppo", core, setting, "CartPole-v1", 0, root=zoo)
    if budget:
        manifest = json.loads((zoo / "manifest.json").read_text())  # the evaluation budget the README's table used
        manifest["evaluation"] = budget
        (zoo / "manifest.json").write_text(json.dumps(manifest))
    return zoo


def test_no_arguments_use_the_manifest_setting(agents, tmp_path, monkeypatch):
    """`python evaluate.py` evaluates the zoo's agents on the setting the manifest records for them, not a fixed name."""
    from rims_rl.cli.evaluate import zoo_default_setting

    budget = {"cartpole-poles": {"n_episodes": 3, "n_envs": 2}}
    zoo = _cartpole_zoo(agents, tmp_path, monkeypatch, {"cartpole-poles": ("rims", "lstm")}, budget)
    assert zoo_default_setting(list_zoo(zoo)) == "cartpole-poles"
    assert main(["--n-bootstrap", "50", "-o", str(tmp_path / "eval"), "-q"]) == 0
    (out,) = list((tmp_path / "eval").iterdir())
    assert out.name.startswith("cartpole-poles")
    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["setting"] == "cartpole-poles"
    assert data["meta"]["n_envs"] == 2 and {t["n_episodes"] for t in data["meta"]["targets"]} == {3}
    assert [a["label"] for a in data["meta"]["agents"]] == ["poles/rims", "poles/lstm"]
    # only one core in a setting: that setting is not chosen; none with both: nothing to evaluate
    entries = [e for e in list_zoo(zoo) if e.core == "rims"]
    assert zoo_default_setting(entries) is None


def test_several_settings_one_folder_each_and_the_games_tables(agents, tmp_path, monkeypatch, capsys):
    """`--setting A B`: each setting's zoo agents with that setting's own budget, then games.md/games.csv beside them."""
    budget = {"cartpole-poles": {"n_episodes": 3, "n_envs": 2}}  # the twin has none: 2 episodes (its setting's), 1 env
    both = ("rims", "lstm")
    _cartpole_zoo(agents, tmp_path, monkeypatch, {"cartpole-poles": both, "cartpole-twin": both}, budget)
    argv = ["--setting", "cartpole-poles", "cartpole-twin", "--jobs", "1", "--n-bootstrap", "50", "-q"]
    assert main([*argv, "-o", str(tmp_path / "eval")]) == 0
    (parent,) = (tmp_path / "eval").iterdir()
    assert parent.name == "games_1"
    assert sorted(p.name for p in parent.iterdir()) == ["cartpole-poles", "cartpole-twin", "games.csv", "games.md"]
    expected = {"cartpole-poles": (3, 2, ["poles/rims", "poles/lstm"]), "cartpole-twin": (2, 1, ["twin/rims", "twin/lstm"])}
    for setting, (n_episodes, n_envs, labels) in expected.items():
        meta = json.loads((parent / setting / "results.json").read_text())["meta"]
        assert meta["setting"] == setting and meta["name"] == setting
        assert {t["n_episodes"] for t in meta["targets"]} == {n_episodes} and meta["n_envs"] == n_envs, setting
        assert [a["label"] for a in meta["agents"]] == labels
        assert (parent / setting / "report.md").is_file()
    with open(parent / "games.csv") as f:
        rows = list(csv.DictReader(f))
    per_game = [r for r in rows if r["game"].startswith("cartpole-")]
    assert len(per_game) == 2 * 2 * 2  # (train, same) x (sampled, greedy) x 2 games
    for split in ("train", "same"):
        for mode in ("sampled", "greedy"):
            games = [r["game"] for r in per_game if (r["split"], r["actions"]) == (split, mode)]
            assert games == ["cartpole-poles", "cartpole-twin"]
    assert len(rows) == len(per_game) + 2 * 2 * 2  # median and IQM per split and action mode
    poles = json.loads((parent / "cartpole-poles" / "results.json").read_text())
    train = next(r for r in per_game if (r["game"], r["split"], r["actions"]) == ("cartpole-poles", "train", "sampled"))
    rims_seed_means = next(r["per_seed"] for r in poles["scores"]
                           if (r["agent"], r["env"], r["actions"]) == ("rims", "train", "sampled"))  # fmt: skip
    assert float(train["rims"]) == pytest.approx(np.mean(rims_seed_means), rel=1e-5)
    markdown = (parent / "games.md").read_text()
    assert "### split `train`, sampled actions" in markdown and "| cartpole-twin |" in markdown
    out = capsys.readouterr().out
    assert markdown.strip() in out and str(parent) in out
    # one setting: the folder, name and budget of before (`args.setting` a name, not a list)
    assert main(["--setting", "cartpole-twin", "--jobs", "1", "--n-bootstrap", "50", "-q", "-o", str(tmp_path / "one")]) == 0
    (one,) = (tmp_path / "one").iterdir()
    assert one.name == "cartpole-twin_1" and not (one / "games.md").exists()
    meta = json.loads((one / "results.json").read_text())["meta"]
    assert meta["setting"] == "cartpole-twin" and meta["n_envs"] == 1


@pytest.mark.parametrize(
    "argv, code, needles",
    [
        (["--setting", "cartpole-poles", "cartpole-twin", "--rims", "R", "--lstm", "L"], 2, ["one setting at a time"]),
        (["--setting", "cartpole-poles", "cartpole-twin", "cartpole-poles"], 2, ["cartpole-poles", "twice"]),
        (["--setting", "cartpole-poles", "no-such-setting"], 1, ["unknown setting", "no-such-setting"]),
        (["--setting", "cartpole-poles", "cartpole-twin", "--splits", "no-such-split"], 1, ["no split", "no-such-split"]),
        (["--setting", "cartpole-poles", "cartpole-twin"], EXIT_NOTHING_TO_EVALUATE, ["cartpole-twin", "no pretrained"]),
    ],
)
def test_several_settings_refused_before_anything_is_played(agents, tmp_path, monkeypatch, capsys, argv, code, needles):
    """Named agents, a repeated or unknown setting or split, a setting without zoo agents: one line, nothing written."""
    import rims_rl.evaluation

    _cartpole_zoo(agents, tmp_path, monkeypatch, {"cartpole-poles": ("rims", "lstm"), "cartpole-twin": ("rims",)})
    monkeypatch.setattr(rims_rl.evaluation, "evaluate", lambda *a, **k: pytest.fail("an evaluation started"))
    capsys.readouterr()
    assert main([*argv, "-o", str(tmp_path / "eval"), "-q"]) == code
    err = capsys.readouterr().err.strip()
    assert all(n in err for n in needles) and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "eval").exists()


def test_ale_env_id_is_preprocessed_as_in_training():
    """`--env ALE/...` used SB3's make_vec_env: raw 210x160x3 frames, unlike training's 84x84 grey frames."""
    from rims_rl.evaluation import gym_targets

    (target,) = gym_targets(["ALE/Pong-v5"], 1, [0])
    env = target.make_env(n_envs=1, seed=0)
    assert env.observation_space.shape == (84, 84, 1)
    env.close()
    env = target.make_env(n_envs=1, seed=0, frame_stack=4)
    assert env.observation_space.shape == (84, 84, 4)
    env.close()


def test_run_folder_is_evaluated_on_envs_built_as_in_training(tmp_path, capsys):
    """A run trained with a frame stack and env_kwargs is evaluated with them (its config.yml), not with bare envs."""
    from rims_rl.cli.train import main as train_main
    from rims_rl.evaluation.runner import EnvOptions, env_options_from_run, run_folder_of

    tiny = ["--env", "RimsCueRecall-v0", "-n", "128", "--eval-freq", "0", "--no-progress", "--verbose", "0"]
    params = ["-params", "frame_stack:2", "env_kwargs.delay:3"]
    assert train_main([*tiny, *params, "-f", str(tmp_path / "logs"), "--heldout-episodes", "0"]) == 0
    (run,) = (tmp_path / "logs" / "rims_ppo").iterdir()
    assert run_folder_of(run) == run_folder_of(run / "RimsCueRecall-v0.zip") == run
    assert env_options_from_run(run) == EnvOptions(frame_stack=2, env_kwargs={"delay": 3})
    capsys.readouterr()
    argv = ["--agent", str(run), "--env", "RimsCueRecall-v0", "-n", "2", "--no-random", "-o", str(tmp_path / "eval"), "-q"]
    assert main(argv) == 0, capsys.readouterr().err
    # a checkpoint inside the run folder finds its run too; copied out of it, it is played on bare envs and refused
    assert main([*argv[:1], str(run / "RimsCueRecall-v0.zip"), *argv[2:]]) == 0
    alone = tmp_path / "alone.zip"
    alone.write_bytes((run / "RimsCueRecall-v0.zip").read_bytes())
    capsys.readouterr()
    assert main([*argv[:1], str(alone), *argv[2:]]) == 1
    assert "observation space mismatch" in capsys.readouterr().err


def test_vecnormalize_run_needs_its_statistics(tmp_path):
    from rims_rl.evaluation.runner import env_options_from_run

    (tmp_path / "config.yml").write_text("normalize: true\nnormalize_kwargs: {norm_reward: false}\n")
    with pytest.raises(ValueError, match=r"trained with VecNormalize but has no vecnormalize\.safetensors"):
        env_options_from_run(tmp_path)


def test_vecnormalize_run_is_evaluated_with_its_statistics(tmp_path, capsys):
    """A run trained with VecNormalize is played through a frozen VecNormalize holding the run's statistics."""
    import rims_rl.checkpoint
    from rims_rl.cli.train import main as train_main
    from rims_rl.evaluation import gym_targets
    from rims_rl.evaluation.runner import env_options_from_run, make_target_env

    if not hasattr(rims_rl.checkpoint, "load_vecnormalize"):
        pytest.skip("needs the safe (no pickle) VecNormalize file format of issue 13")
    tiny = ["--env", "RimsCueRecall-v0", "-n", "256", "--eval-freq", "0", "--no-progress", "--verbose", "0"]
    assert train_main([*tiny, "-params", "normalize:true", "-f", str(tmp_path / "logs")]) == 0
    (run,) = (tmp_path / "logs" / "rims_ppo").iterdir()
    options = env_options_from_run(run)
    assert options.normalize_kwargs is not None and options.vecnormalize_path.is_file()
    (target,) = gym_targets(["RimsCueRecall-v0"], 1, [0])
    env = make_target_env(target, 1, 0, options)
    assert not env.training and not env.norm_reward
    assert env.obs_rms.count > 256 and np.abs(env.obs_rms.mean).sum() > 0  # the run's statistics, not fresh ones
    env.close()
    argv = ["--agent", str(run), "--env", "RimsCueRecall-v0", "-n", "2", "--no-random", "-o", str(tmp_path / "eval"), "-q"]
    assert main(argv) == 0, capsys.readouterr().err

"""User mistakes on the command line: one line on stderr, exit code 2, no traceback, nothing left on disk.

Each case is checked before anything is trained: the whole configuration (value ranges, log folder, one env built as
training builds it, the policy with its core built once on the env's real spaces) is validated before the run folder
is created, so a rejected command leaves ``-f`` untouched.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from rims_rl.cli import evaluate as evaluate_cli
from rims_rl.cli import train as train_cli
from rims_rl.envs import list_settings, load_setting

REPO = Path(__file__).resolve().parent.parent
ENV = "RimsCueRecall-v0"  # cheap env: validation builds it once
FAST = ["--env", ENV, "--no-progress", "--verbose", "0"]


def _one_line(capsys: pytest.CaptureFixture[str], code: int, prog: str, *needles: str) -> str:
    """Assert exit code 2 and exactly one stderr line ``<prog>: error: ...`` containing every needle."""
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error:"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _train_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> None:
    logs = tmp_path / "logs"
    code = train_cli.main([*FAST, "-f", str(logs), *argv])
    _one_line(capsys, code, "rims-train", *needles)
    assert not logs.exists(), "a rejected command must leave no run folder or file"


# --- train: hyperparameters and core options -------------------------------------------------------------------


def test_unknown_core_kwargs_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _train_error(tmp_path, capsys, ["-params", "policy_kwargs.core_kwargs.n_unit:4"], "n_unit", "core_kwargs", "allowed")


def test_k_active_above_n_units(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _train_error(tmp_path, capsys, ["-params", "policy_kwargs.core_kwargs.k_active:9"], "k_active", "n_units=4")


def test_unknown_lstm_core_kwargs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _train_error(tmp_path, capsys, ["--algo", "lstm_ppo", "-params", "policy_kwargs.core_kwargs.k_active:2"], "k_active")


def test_n_steps_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _train_error(tmp_path, capsys, ["-params", "n_steps:0"], "n_steps", "positive")


def test_unknown_env_kwargs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _train_error(tmp_path, capsys, ["-params", "env_kwargs.bogus:1"], "cannot build env", "bogus")


def test_negative_gamma(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _train_error(tmp_path, capsys, ["-params", "gamma:-0.5"], "gamma", "[0, 1]")


def test_negative_n_epochs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _train_error(tmp_path, capsys, ["-params", "n_epochs:-1"], "n_epochs", "positive")


@pytest.mark.parametrize(
    "override, needle",
    [
        ("batch_size:1", "batch_size"),
        ("gae_lambda:2", "gae_lambda"),
        ("learning_rate:0", "learning_rate"),
        ("learning_rate:lin_-1e-3", "learning_rate"),
        ("clip_range:-0.2", "clip_range"),
        ("max_grad_norm:0", "max_grad_norm"),
        ("frame_stack:-2", "frame_stack"),
        ("normalize:true", None),  # valid: VecNormalize on a Box env (checked below to pass validation)
        ("normalize_kwargs.bogus:1", "bogus"),
        ("policy_kwargs.net_arch:[-4]", "policy"),
    ],
)
def test_out_of_range_relatives(override: str, needle: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if needle is None:
        train_cli.validate_run(
            train_cli.parse_args([*FAST, "-f", str(tmp_path / "logs")]),
            *_config_with(override),
            env_name=ENV,
            env_id=ENV,
            section=ENV,
        )
        assert not (tmp_path / "logs").exists()
        return
    extra = ["-params", override, "normalize:true"] if override.startswith("normalize_kwargs") else ["-params", override]
    _train_error(tmp_path, capsys, extra, needle)


def _config_with(override: str) -> tuple[object, str]:
    from rims_rl.config import load_agent_config, parse_override

    config, _ = load_agent_config("rims_ppo", ENV, dict([parse_override(override)]))
    return config, "rims_ppo"


# --- train: command-line values ------------------------------------------------------------------------------------


def test_train_n_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`-n 0` used to train the YAML budget silently."""
    _train_error(tmp_path, capsys, ["-n", "0"], "--n-timesteps", "positive integer")


def test_train_n_negative(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _train_error(tmp_path, capsys, ["-n", "-5"], "--n-timesteps", "positive integer")


def test_negative_n_envs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _train_error(tmp_path, capsys, ["--n-envs", "-2"], "--n-envs", "positive integer")


@pytest.mark.parametrize("flag", ["--n-envs", "--eval-episodes"])
def test_zero_counts(flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _train_error(tmp_path, capsys, [flag, "0"], flag, "positive integer")


def test_non_integer_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _train_error(tmp_path, capsys, ["-n", "1e5x"], "--n-timesteps", "1e5x")


def test_log_folder_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`-f` unwritable: a path through an existing file (root ignores permission bits, a file cannot be a folder)."""
    blocker = tmp_path / "logs"
    blocker.write_text("not a folder")
    code = train_cli.main([*FAST, "-f", str(blocker / "sub")])
    _one_line(capsys, code, "rims-train", "--log-folder", "not a folder")
    assert blocker.read_text() == "not a folder" and sorted(p.name for p in tmp_path.iterdir()) == ["logs"]


def test_missing_trained_agent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _train_error(tmp_path, capsys, ["-i", str(tmp_path / "nope.zip")], "--trained-agent", "nope.zip")


def test_unknown_algo_choice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _train_error(tmp_path, capsys, ["--algo", "dqn"], "dqn", "rims_ppo")


def test_unknown_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _train_error(tmp_path, capsys, ["--bogus-flag", "10"], "unrecognized arguments")


# --- settings files --------------------------------------------------------------------------------------------------


@pytest.fixture
def settings_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "settings"
    folder.mkdir()
    monkeypatch.setenv("RIMS_RL_SETTINGS_DIR", str(folder))
    (folder / "mine.yml").write_text("name: mine\nkind: gym\ntrain: RimsCueRecall-v0\nheldout: {again: RimsCueRecall-v0}\n")
    return folder


def _skipped(caplog: pytest.LogCaptureFixture, path: Path, needle: str) -> None:
    """The broken file is named in one warning line; the shipped settings and the user's good one keep working."""
    with caplog.at_level(logging.WARNING, logger="rims_rl.envs.settings"):
        names = list_settings()
    assert {"gridworld-pickup", "mine"} <= set(names)
    assert load_setting("gridworld-pickup").kind == "gridworld"
    assert load_setting("mine").heldout["again"].id == ENV
    lines = [r.getMessage() for r in caplog.records if str(path) in r.getMessage()]
    assert len(lines) == 1 and needle in lines[0] and "\n" not in lines[0], caplog.text


def test_malformed_settings_file_skipped(settings_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = settings_dir / "broken.yml"
    bad.write_text("name: broken\nkind: gym\ntrain: [CartPole-v1\n")
    _skipped(caplog, bad, "malformed YAML")


def test_python_tagged_settings_file_skipped(settings_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    marker = settings_dir / "MARKER"
    bad = settings_dir / "tagged.yml"
    bad.write_text(f'name: !!python/object/apply:os.system ["touch {marker}"]\nkind: gym\ntrain: CartPole-v1\n')
    _skipped(caplog, bad, "tag")
    assert not marker.exists()


def test_settings_file_missing_train(settings_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = settings_dir / "no_train.yml"
    bad.write_text("name: no-train\nkind: gridworld\nheldout: {a: CartPole-v1}\n")
    _skipped(caplog, bad, "train")
    assert "no-train" not in list_settings()


@pytest.mark.parametrize(
    "text, needle",
    [
        ("- just\n- a list\n", "mapping"),
        ("name: odd\nkind: chess\ntrain: CartPole-v1\n", "kind"),
        ("name: odd\nkind: gym\ntrain: CartPole-v1\nheldout: [a, b]\n", "heldout"),
        ("name: odd\nkind: gym\ntrain: CartPole-v1\nn_eval_episodes: 0\n", "n_eval_episodes"),
        ("name: odd\nkind: gym\ntrain: {id: CartPole-v1, extra: 1}\n", "train"),
        ("name: odd\nkind: gym\ntrain: CartPole-v1\nframe_stak: 4\n", "frame_stak"),
    ],
)
def test_settings_file_relatives_skipped(text: str, needle: str, settings_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = settings_dir / "odd.yml"
    bad.write_text(text)
    _skipped(caplog, bad, needle)


def test_training_on_a_broken_setting_is_one_line(
    settings_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (settings_dir / "broken.yml").write_text("name: broken\nkind: gym\n")
    logs = tmp_path / "logs"
    code = train_cli.main(["--env", "broken", "-f", str(logs), "--no-progress"])
    _one_line(capsys, code, "rims-train", "broken")
    assert not logs.exists()


def test_duplicate_setting_name_names_both_files(
    settings_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second file reusing `gridworld-pickup` used to replace the shipped setting silently."""
    shipped = load_setting("gridworld-pickup").source
    twin = settings_dir / "my_pickup.yml"
    twin.write_text("name: gridworld-pickup\nkind: gym\ntrain: CartPole-v1\n")
    logs = tmp_path / "logs"
    code = train_cli.main(["--env", "gridworld-pickup", "-f", str(logs), "--no-progress"])
    line = _one_line(capsys, code, "rims-train", "gridworld-pickup", str(twin), shipped)
    assert "two files" in line and not logs.exists()
    assert load_setting("mine").train_env.id == ENV  # the other settings keep working
    code = evaluate_cli.main(["--rims", "x.zip", "--lstm", "y.zip", "--setting", "gridworld-pickup", "-o", str(logs)])
    _one_line(capsys, code, "evaluate.py", "two files", str(twin))  # checked before the (missing) agents


# --- evaluate --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["-n", "0"], "--n-episodes"),
        (["-n", "-1"], "--n-episodes"),
        (["--n-envs", "0"], "--n-envs"),
        (["--n-envs", "-3"], "--n-envs"),
        (["--seeds", "-1"], "--seeds"),
        (["--n-bootstrap", "0"], "--n-bootstrap"),
        (["--video-steps", "0"], "--video-steps"),
        (["--setting", "gridworld-pickup", "--env", "CartPole-v1"], "not allowed"),
    ],
)
def test_evaluate_bad_values(argv: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`evaluate -n 0` used to play 100 episodes, `-n -1` to exit 0 with NaN scores."""
    out = tmp_path / "eval"
    code = evaluate_cli.main([*argv, "--rims", "a.zip", "--lstm", "b.zip", "-o", str(out)])
    _one_line(capsys, code, "evaluate.py", needle)
    assert not out.exists()


@pytest.mark.parametrize("argv", [["--list-zoo"], [], ["--rims", "some/zoo-id", "--lstm", "other/zoo-id"]])
def test_zoo_manifest_entry_is_a_list(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "manifest.json").write_text('{"version": 1, "agents": [["gridworld-pickup/rims_ppo/seed0", "x.zip"]]}')
    monkeypatch.setenv("RIMS_RL_ZOO", str(tmp_path))
    out = tmp_path / "eval"
    code = evaluate_cli.main([*argv, "-o", str(out)])
    _one_line(capsys, code, "evaluate.py", "manifest", "list")
    assert not out.exists()


# --- end to end: a real process, stderr as a user sees it -------------------------------------------------------------


@pytest.mark.parametrize(
    "script, argv, needle",
    [
        ("train.py", ["-n", "0"], "--n-timesteps"),
        ("train.py", ["--env", ENV, "-params", "policy_kwargs.core_kwargs.k_active:9"], "k_active"),
        ("evaluate.py", ["-n", "-1"], "--n-episodes"),
    ],
)
def test_subprocess_one_line_rc2(script: str, argv: list[str], needle: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / script), *argv, "-f" if script == "train.py" else "-o", str(tmp_path / "out")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr
    assert proc.stdout == "" and list(tmp_path.iterdir()) == []


def test_atari_core_mistake_checked_on_the_real_image_spaces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Validation builds the CNN policy on the transposed, frame-stacked Atari observations, as training does."""
    logs = tmp_path / "logs"
    argv = ["--env", "atari-transfer", "-f", str(logs), "--no-progress", "-params", "policy_kwargs.core_kwargs.k_active:7"]
    _one_line(capsys, train_cli.main(argv), "rims-train", "k_active", "n_units=6")
    assert not logs.exists()

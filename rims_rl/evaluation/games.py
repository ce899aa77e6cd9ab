"""Across games: per-game score ratios of RIMs against the LSTM and their IQM over games (MinAtar, Atari).

Each game is its own evaluator comparison (``evaluate.py --rims ... --lstm ... --setting minatar-<game>``, or a
sweep's report folders), with its own agents; seeds are the unit within a game. For every split name that all
games share (``train`` and the flavours common to all), per game:

- the seed means of each core and the random policy's score, and the score ratio
  ``(S_rims - S_lstm) / (max(S_lstm, S_ref) - S_random)`` (the paper's, :func:`rims_rl.evaluation.scores.score_ratio`);
- across games: the median and the IQM (rliable's definition) of the per-game ratios, with 95% percentile intervals
  from a bootstrap stratified by game that resamples each core's seeds within each game (the normalizer, the LSTM's
  mean, is resampled with them); and the number of games where RIMs' mean is higher, with a two-sided sign-test
  p-value over games.

With 3 seeds per core and game the bootstrap intervals are optimistic (a bootstrap over 3 values cannot be wider than
their range); the report says so beside them.

Command line::

    python -m rims_rl.evaluation.games logs/sweeps/minatar-comparison/report/*_vs_lstm_ppo_1 -o docs/results/NAME

or, evaluating the zoo's agents of each game first (one result folder per game, then these tables)::

    python evaluate.py --setting minatar-breakout minatar-asterix minatar-freeway minatar-seaquest minatar-spaceinvaders
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rims_rl.evaluation.report import atomic_write_text
from rims_rl.evaluation.scores import iqm, score_ratio


@dataclass
class GameScores:
    """One game's comparison: per split and action mode, each core's seed means and the random score.

    :param name: the game (setting name)
    :param folder: the evaluator's result folder
    :param splits: split -> actions -> {"rims": [...], "lstm": [...], "random": float, "ref": float}
    """

    name: str
    folder: Path
    splits: dict[str, dict[str, dict[str, Any]]]


def load_game(folder: str | Path) -> GameScores:
    """
    :param folder: an evaluator result folder with RIMs and LSTM agents (its ``results.json``)
    :return: the game's scores
    :raises ValueError: not a RIMs-vs-LSTM result folder
    """
    folder = Path(folder)
    path = folder / "results.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{folder}: no readable results.json ({error})") from None
    refs = {t["label"]: t.get("ref_score") for t in data["meta"]["targets"]}
    splits: dict[str, dict[str, dict[str, Any]]] = {}
    for row in data["scores"]:
        entry = splits.setdefault(row["env"], {}).setdefault(row["actions"] if row["agent"] != "random" else "*", {})
        if row["agent"] in ("rims", "lstm"):
            entry[row["agent"]] = [float(x) for x in row["per_seed"]]
        elif row["agent"] == "random":
            entry["random"] = float(row["mean"])
    for label, modes in splits.items():
        random = modes.pop("*", {}).get("random")
        for mode in modes.values():
            mode["random"], mode["ref"] = random, refs.get(label)
    if not any("rims" in m and "lstm" in m for modes in splits.values() for m in modes.values()):
        raise ValueError(f"{folder}: not a RIMs-vs-LSTM comparison (evaluate.py --rims ... --lstm ...)")
    name = data["meta"].get("setting") or data["meta"].get("name") or folder.name
    return GameScores(str(name), folder, splits)


def _sign_test_p(wins: int, n: int) -> float:
    from scipy import stats

    return float(stats.binomtest(wins, n, 0.5).pvalue) if n else float("nan")


def across_games(
    games: Sequence[GameScores], split: str, actions: str = "sampled", n_bootstrap: int = 5000, seed: int = 0
) -> dict[str, Any]:
    """
    :param games: the games' scores
    :param split: a split every game has
    :param actions: "sampled" or "greedy"
    :param n_bootstrap: bootstrap replicates
    :param seed: bootstrap seed
    :return: per-game rows and the aggregates (median, IQM with intervals; wins and sign-test p)
    """
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    boot = []
    for game in games:
        s = game.splits[split][actions]
        rims, lstm = np.asarray(s["rims"]), np.asarray(s["lstm"])
        random, ref = float(s["random"]), float(s["ref"] if s["ref"] is not None else -np.inf)
        ratio = score_ratio(rims.mean(), lstm.mean(), random, ref)
        rows.append({"game": game.name, "rims": float(rims.mean()), "lstm": float(lstm.mean()), "random": random,
                     "n_rims": len(rims), "n_lstm": len(lstm), "ratio": float(ratio)})  # fmt: skip
        r = rims[rng.integers(0, len(rims), (n_bootstrap, len(rims)))].mean(axis=1)
        m = lstm[rng.integers(0, len(lstm), (n_bootstrap, len(lstm)))].mean(axis=1)
        boot.append(score_ratio(r, m, random, ref))
    ratios = np.array([row["ratio"] for row in rows])
    samples = np.stack(boot, axis=-1)  # (n_bootstrap, n_games)
    out: dict[str, Any] = {"split": split, "actions": actions, "games": rows, "n_bootstrap": n_bootstrap}
    for name, func in (("median", lambda x: np.median(x, axis=-1)), ("iqm", iqm)):
        values = func(samples)
        finite = values[np.isfinite(values)]
        ci = np.percentile(finite, [2.5, 97.5]).tolist() if len(finite) else [float("nan")] * 2
        out[name] = {"value": float(func(ratios[None])[0]), "ci": [float(ci[0]), float(ci[1])]}
    wins = sum(row["rims"] > row["lstm"] for row in rows)
    ties = sum(row["rims"] == row["lstm"] for row in rows)
    out["wins"], out["n_games"], out["sign_p"] = int(wins), len(rows), _sign_test_p(wins, len(rows) - ties)
    return out


def common_splits(games: Sequence[GameScores]) -> list[str]:
    """:return: the split names every game has, in the first game's order"""
    return [s for s in games[0].splits if all(s in g.splits for g in games[1:])]


def games_markdown(results: Sequence[dict[str, Any]]) -> str:
    """
    :param results: outputs of :func:`across_games`
    :return: markdown: per split and action mode, the per-game table and the aggregate line
    """
    lines = ["Score ratio (S_rims - S_lstm) / (max(S_lstm, S_ref) - S_random) per game, from seed means; aggregates",
             "over games with 95% intervals from a bootstrap of each core's seeds within each game (with 3 seeds per",
             "core these intervals are optimistic). Sign test: games where RIMs' mean is higher, two-sided.", ""]  # fmt: skip
    for res in results:
        lines += [f"### split `{res['split']}`, {res['actions']} actions", "",
                  "| game | RIMs (seeds) | LSTM (seeds) | random | ratio |", "| --- | --- | --- | --- | --- |"]  # fmt: skip
        for row in res["games"]:
            lines.append(f"| {row['game']} | {row['rims']:.3f} ({row['n_rims']}) | {row['lstm']:.3f} ({row['n_lstm']}) | "
                         f"{row['random']:.3f} | {row['ratio']:+.3f} |")  # fmt: skip
        med, q = res["median"], res["iqm"]
        lines += ["", f"Median ratio {med['value']:+.3f} [{med['ci'][0]:+.3f}, {med['ci'][1]:+.3f}]; "
                  f"IQM {q['value']:+.3f} [{q['ci'][0]:+.3f}, {q['ci'][1]:+.3f}]; RIMs higher in {res['wins']} of "
                  f"{res['n_games']} games (sign test p = {res['sign_p']:.2f}).", ""]  # fmt: skip
    return "\n".join(lines)


def games_csv(results: Sequence[dict[str, Any]]) -> str:
    """:return: one row per split, action mode and game, then its aggregates"""
    lines = ["split,actions,game,rims,lstm,random,n_rims,n_lstm,ratio"]
    for res in results:
        for row in res["games"]:
            lines.append(f"{res['split']},{res['actions']},{row['game']},{row['rims']:.6g},{row['lstm']:.6g},"
                         f"{row['random']:.6g},{row['n_rims']},{row['n_lstm']},{row['ratio']:.6g}")  # fmt: skip
        for name in ("median", "iqm"):
            agg = res[name]
            lines.append(f"{res['split']},{res['actions']},{name} [{agg['ci'][0]:.6g} {agg['ci'][1]:.6g}],,,,,,"
                         f"{agg['value']:.6g}")  # fmt: skip
    return "\n".join(lines) + "\n"


def write_games(games: Sequence[GameScores], out: str | Path, n_bootstrap: int = 5000, seed: int = 0) -> str:
    """
    The across-games comparison of every split all games share, under each action mode all of them played.

    :param games: the games' scores, one comparison per game
    :param out: folder that receives ``games.md`` and ``games.csv`` (created if needed)
    :param n_bootstrap: bootstrap replicates
    :param seed: bootstrap seed
    :return: the markdown written to ``games.md``
    :raises ValueError: two comparisons of one game, or no split name shared by all games
    """
    if len({g.name for g in games}) != len(games):
        raise ValueError("two folders are the same game; give one comparison per game")
    splits = common_splits(games)
    if not splits:
        raise ValueError("the games share no split name")
    results = [across_games(games, split, mode, n_bootstrap, seed)
               for split in splits for mode in ("sampled", "greedy")
               if all(mode in g.splits[split] for g in games)]  # fmt: skip
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    markdown = games_markdown(results)
    atomic_write_text(out / "games.md", markdown)
    atomic_write_text(out / "games.csv", games_csv(results))
    return markdown


def main(argv: list[str] | None = None) -> int:
    """Write games.md and games.csv; exit 2 on a usage mistake."""
    parser = argparse.ArgumentParser(prog="python -m rims_rl.evaluation.games", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="evaluator result folders, one per game")
    parser.add_argument("-o", "--output-dir", required=True)
    parser.add_argument("--n-bootstrap", type=int, default=5000)
    args = parser.parse_args(argv)
    try:
        markdown = write_games([load_game(f) for f in args.folders], args.output_dir, args.n_bootstrap)
    except (OSError, ValueError, KeyError) as error:
        print(f"games: error: {error}", file=sys.stderr)
        return 2
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

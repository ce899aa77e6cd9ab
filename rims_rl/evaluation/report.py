"""Evaluation outputs: terminal table, markdown, CSV, JSON and PNG plots, each written atomically."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from rims_rl.evaluation.scores import Comparison, ScoreSummary, _json_safe


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file via a temporary file in the same folder, fsync and os.replace (never a partial file).

    :param path: destination
    :param data: content
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode())


def new_output_dir(root: str | Path, name: str) -> Path:
    """Create a fresh ``root/name_<n>`` folder (n = 1 + the largest existing), so no earlier result is overwritten.

    :param root: parent folder
    :param name: run name
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = name.replace("/", "_")
    existing = [p.name[len(name) + 1 :] for p in root.glob(f"{name}_*")]
    n = max([int(s) for s in existing if s.isdigit()], default=0) + 1
    while True:
        path = root / f"{name}_{n}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


def _fmt(x: float, digits: int = 3) -> str:
    if x is None or not math.isfinite(x):
        return "nan"
    return f"{x:.{digits}g}" if abs(x) >= 1e4 else f"{x:.{digits}f}"


def _ci(ci: Sequence[float]) -> str:
    return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"


RATIO_COLUMNS = [
    "env",
    "S_rims",
    "S_lstm",
    "S_random",
    "S_ref",
    "ratio",
    "ratio 95% CI",
    "S_rims - S_lstm",
    "S_rims / S_lstm",
    "note",
]


def ratio_rows(comparison: Comparison) -> list[list[str]]:
    """Table rows for the per-env ratio table plus median and IQM rows."""
    rows = [
        [
            r.env,
            _fmt(r.s_rims),
            _fmt(r.s_lstm),
            _fmt(r.s_random),
            _fmt(r.s_ref),
            _fmt(r.ratio),
            _ci(r.ratio_ci),
            _fmt(r.difference),
            _fmt(r.quotient),
            r.note,
        ]
        for r in comparison.envs
    ]
    agg = comparison.aggregate
    rows.append(
        [
            "median",
            "",
            "",
            "",
            "",
            _fmt(agg.median),
            _ci(agg.median_ci),
            "",
            "",
            f"{agg.n_envs_undefined} env(s) undefined" if agg.n_envs_undefined else "",
        ]
    )
    rows.append(["IQM", "", "", "", "", _fmt(agg.iqm), _ci(agg.iqm_ci), "", "", ""])
    return rows


SCORE_COLUMNS = ["agent", "env", "mean score", "95% CI", "CI over", "runs", "episodes"]


def score_rows(summaries: Sequence[ScoreSummary]) -> list[list[str]]:
    """Table rows for the per-agent score table."""
    return [[s.agent, s.env, _fmt(s.mean), _ci(s.ci), s.ci_unit, str(s.n_runs), str(s.n_episodes)] for s in summaries]


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def print_tables(comparison: Comparison | None, summaries: Sequence[ScoreSummary], console: Any = None) -> None:
    """Print the score table and (when there is one) the ratio table with rich.

    :param comparison: the RIMs-versus-LSTM comparison or None
    :param summaries: per-agent scores
    :param console: a rich Console (default: stdout)
    """
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal or console.width < 150:  # piped or narrow: do not squash the columns
            console = Console(width=150)
    table = Table(title="Scores (mean over runs; CI: stratified bootstrap)")
    for c in SCORE_COLUMNS:
        table.add_column(c)
    for row in score_rows(summaries):
        table.add_row(*row)
    console.print(table)
    if comparison is not None:
        table = Table(title="Score ratio (S_rims - S_lstm) / (max(S_lstm, S_ref) - S_random)")
        for c in RATIO_COLUMNS:
            table.add_column(c)
        for row in ratio_rows(comparison):
            table.add_row(*row)
        console.print(table)


def _csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(columns)
    writer.writerows(rows)
    return buf.getvalue()


def comparison_csv(comparison: Comparison) -> str:
    """Per-env comparison as CSV, one row per env (numbers unrounded)."""
    columns = [
        "env",
        "env_id",
        "s_rims",
        "s_lstm",
        "s_random",
        "s_ref",
        "ratio",
        "ratio_ci_low",
        "ratio_ci_high",
        "difference",
        "difference_ci_low",
        "difference_ci_high",
        "quotient",
        "ci_unit",
        "n_runs_rims",
        "n_runs_lstm",
        "n_episodes",
        "ratio_undefined",
        "note",
    ]
    rows = [
        [
            r.env,
            r.env_id,
            r.s_rims,
            r.s_lstm,
            r.s_random,
            r.s_ref,
            r.ratio,
            *r.ratio_ci,
            r.difference,
            *r.difference_ci,
            r.quotient,
            r.ci_unit,
            r.n_runs_rims,
            r.n_runs_lstm,
            r.n_episodes,
            r.ratio_undefined,
            r.note,
        ]
        for r in comparison.envs
    ]
    a = comparison.aggregate
    rows.append(["median", "", "", "", "", "", a.median, *a.median_ci, *[""] * 11])
    rows.append(["IQM", "", "", "", "", "", a.iqm, *a.iqm_ci, *[""] * 11])
    return _csv(columns, rows)


def episodes_csv(episodes: dict[str, dict[str, Any]], random: dict[str, Any], cores: dict[str, str | None]) -> str:
    """Every episode's return and length: agent, core, env, episode, return, length."""
    rows = []
    for agent, per_env in episodes.items():
        for env, eps in per_env.items():
            pairs = enumerate(zip(eps.returns, eps.lengths, strict=True))
            rows += [[agent, cores.get(agent), env, i, r, n] for i, (r, n) in pairs]
    for env, eps in random.items():
        rows += [["random", "random", env, i, r, n] for i, (r, n) in enumerate(zip(eps.returns, eps.lengths, strict=True))]
    return _csv(["agent", "core", "env", "episode", "return", "length"], rows)


def _savefig(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def plot_ratios(comparison: Comparison, path: str | Path) -> None:
    """Bar chart of per-env ratios with their 95% CIs, sorted (like the paper's Fig. 5); undefined ones skipped.

    :param comparison: the comparison
    :param path: PNG destination
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted((r for r in comparison.envs if math.isfinite(r.ratio)), key=lambda r: r.ratio)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(rows) + 2), 4))
    x = np.arange(len(rows))
    values = np.array([r.ratio for r in rows])
    low = np.array([r.ratio_ci[0] if math.isfinite(r.ratio_ci[0]) else r.ratio for r in rows])
    high = np.array([r.ratio_ci[1] if math.isfinite(r.ratio_ci[1]) else r.ratio for r in rows])
    colors = ["tab:blue" if v >= 0 else "tab:red" for v in values]
    ax.bar(x, values, color=colors, yerr=np.vstack([values - low, high - values]) if rows else None, capsize=3)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, [r.env for r in rows], rotation=60, ha="right")
    ax.set_ylabel("score ratio\n(S_rims - S_lstm) / (max(S_lstm, S_ref) - S_random)", fontsize=9)
    agg = comparison.aggregate
    ax.set_title(f"RIMs vs LSTM: median {_fmt(agg.median)}, IQM {_fmt(agg.iqm)} (95% CI bars)")
    _savefig(fig, Path(path))
    plt.close(fig)


def plot_splits(summaries: Sequence[ScoreSummary], path: str | Path, title: str = "Score per split") -> None:
    """Grouped bars: mean score per split (x) for each agent / core and the random policy, with 95% CIs.

    :param summaries: per-agent, per-env summaries
    :param path: PNG destination
    :param title: plot title
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(s.env for s in summaries))
    agents = list(dict.fromkeys(s.agent for s in summaries))
    by_key = {(s.agent, s.env): s for s in summaries}
    width = 0.8 / max(1, len(agents))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.5 * len(envs) + 2), 4))
    for k, agent in enumerate(agents):
        xs, ys, errs = [], [], []
        for j, env in enumerate(envs):
            s = by_key.get((agent, env))
            if s is None:
                continue
            xs.append(j + (k - (len(agents) - 1) / 2) * width)
            ys.append(s.mean)
            lo, hi = s.ci if all(math.isfinite(c) for c in s.ci) else (s.mean, s.mean)
            errs.append((s.mean - lo, hi - s.mean))
        ax.bar(xs, ys, width=width, label=agent, yerr=np.array(errs).T if errs else None, capsize=3)
    ax.set_xticks(np.arange(len(envs)), envs)
    ax.set_ylabel("mean episode return")
    ax.set_title(title)
    ax.legend()
    _savefig(fig, Path(path))
    plt.close(fig)


def write_outputs(
    out_dir: str | Path,
    comparison: Comparison | None,
    summaries: Sequence[ScoreSummary],
    episodes: dict[str, dict[str, Any]],
    random: dict[str, Any],
    cores: dict[str, str | None],
    meta: dict[str, Any],
    split_plot: bool = True,
) -> dict[str, Path]:
    """Write report.md, scores.csv, episodes.csv, ratios.csv, results.json, ratios.png and splits.png.

    :param out_dir: destination folder
    :param comparison: the comparison (None: only scores are written)
    :param summaries: per-agent scores
    :param episodes: agent -> env -> Episodes
    :param random: env -> random-policy Episodes
    :param cores: agent -> core
    :param meta: run description saved in results.json (command, checkpoints, setting, seeds, ...)
    :param split_plot: write splits.png
    :return: name -> path of every file written
    """
    out = Path(out_dir)
    files: dict[str, Path] = {}
    md = [
        "# Evaluation\n",
        f"Deterministic actions: {meta.get('deterministic')}. "
        f"CIs: 95% stratified bootstrap ({meta.get('n_bootstrap')} replicates).\n",
        "\n## Scores\n\n",
        markdown_table(SCORE_COLUMNS, score_rows(summaries)),
    ]
    if comparison is not None:
        md += [
            "\n## Score ratio\n\nratio = (S_rims - S_lstm) / (max(S_lstm, S_ref) - S_random); nan where the "
            "denominator is <= 0. S_rims / S_lstm is nan where S_lstm <= 0.\n\n",
            markdown_table(RATIO_COLUMNS, ratio_rows(comparison)),
        ]
        files["ratios.csv"] = out / "ratios.csv"
        atomic_write_text(files["ratios.csv"], comparison_csv(comparison))
        files["ratios.png"] = out / "ratios.png"
        plot_ratios(comparison, files["ratios.png"])
    files["report.md"] = out / "report.md"
    atomic_write_text(files["report.md"], "".join(md))
    files["scores.csv"] = out / "scores.csv"
    atomic_write_text(
        files["scores.csv"],
        _csv(
            ["agent", "env", "env_id", "mean", "ci_low", "ci_high", "ci_unit", "n_runs", "n_episodes", "per_seed"],
            [
                [s.agent, s.env, s.env_id, s.mean, *s.ci, s.ci_unit, s.n_runs, s.n_episodes, " ".join(map(str, s.per_seed))]
                for s in summaries
            ],
        ),
    )
    files["episodes.csv"] = out / "episodes.csv"
    atomic_write_text(files["episodes.csv"], episodes_csv(episodes, random, cores))
    if split_plot:
        files["splits.png"] = out / "splits.png"
        plot_splits(summaries, files["splits.png"], title=f"Score per split: {meta.get('name', '')}")
    data = {
        "meta": meta,
        "scores": [asdict(s) for s in summaries],
        "comparison": comparison.to_dict() if comparison is not None else None,
    }
    files["results.json"] = out / "results.json"
    atomic_write_text(files["results.json"], json.dumps(_json_safe(data), indent=2) + "\n")
    return files

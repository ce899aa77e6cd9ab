"""Evaluation outputs: terminal tables, markdown report, CSV, JSON and PNG plots, each written atomically.

The report leads with the generalization gap's difference-in-differences per held-out split and its aggregate,
and states the seeds per core, the episodes per seed, the interval method, the action modes and each core's size.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from rims_rl.evaluation.scores import MIN_SEEDS_BOOTSTRAP, Comparison, EnvComparison, ScoreSummary, _json_safe


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file via a temporary file in the same folder, fsync and os.replace (never a partial file), with the
    mode the umask gives new files (see :func:`rims_rl.checkpoint.atomic_write`).

    :param path: destination
    :param data: content
    """
    from rims_rl.checkpoint import atomic_write

    with atomic_write(path) as file:
        file.write(data)


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
    if ci[0] is None or not math.isfinite(ci[0]):
        return "n/a"
    return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"


def _p(p: float) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else "<0.001"


CI_METHOD_TEXT = {
    "welch": (
        "Welch t-intervals for the per-split differences, ratios and DiDs; for the aggregates, t-intervals with "
        "seed-bootstrap standard errors (each core's seeds resampled, the same seeds on every split) and "
        f"Welch-Satterthwaite degrees of freedom (fewer than {MIN_SEEDS_BOOTSTRAP} seeds per core)"
    ),
    "bootstrap": (
        "percentile intervals of the joint seed bootstrap (both cores' seeds resampled, the same seeds on every "
        f"split), expanded for small samples ({MIN_SEEDS_BOOTSTRAP} or more seeds per core)"
    ),
    "none": "none (a core has a single seed: seeds are the unit, so there is no interval)",
}


def _title(c: Comparison) -> str:
    return f"{c.metric}, {c.actions} actions"


def did_columns() -> list[str]:
    """Columns of the difference-in-differences table."""
    return ["split", "gap RIMs", "gap LSTM", "DiD", "95% CI", "p Welch", "p perm."]


def _aggregated(c: Comparison) -> str:
    """:return: what the aggregates run over: "held-out", or the splits when only some held-out splits enter them"""
    held = [r.env for r in c.envs if r.heldout]
    return "held-out" if not c.aggregate_splits or c.aggregate_splits == held else ", ".join(c.aggregate_splits)


def did_rows(c: Comparison) -> list[list[str]]:
    """Per held-out split: each core's generalization gap (train - split), the DiD, its CI and p-values (a split left
    out of the aggregates is marked); the DiD contrasts; then the median and IQM over the aggregated splits."""
    rows = [
        [r.env + ("" if r.in_aggregate or _aggregated(c) == "held-out" else " (not aggregated)"), _fmt(r.gap_rims),
         _fmt(r.gap_lstm), _fmt(r.did), _ci(r.did_ci), _p(r.did_p_welch), _p(r.did_p_perm)]
        for r in c.envs
        if r.heldout
    ]  # fmt: skip
    rows += [[k.label, "", "", _fmt(k.value), _ci(k.ci), _p(k.p_welch), _p(k.p_perm)] for k in c.contrasts]
    a = c.aggregates["did"]
    rows.append([f"median ({_aggregated(c)})", "", "", _fmt(a.median), _ci(a.median_ci), "", _p(a.median_p_perm)])
    rows.append([f"IQM ({_aggregated(c)})", "", "", _fmt(a.iqm), _ci(a.iqm_ci), "", _p(a.iqm_p_perm)])
    return rows


def headline_table(comparisons: Sequence[Comparison]) -> tuple[list[str], list[list[str]]]:
    """One cell per held-out split (and median/IQM) and comparison: "DiD [CI] p=<permutation p>".

    :param comparisons: comparisons with a training split
    :return: (columns, rows)
    """
    comps = [c for c in comparisons if c.train_split is not None]
    if not comps:
        return [], []
    columns = ["held-out split", *(f"DiD {_title(c)}" for c in comps)]

    def cell(value: float, ci: Sequence[float], p: float) -> str:
        return f"{_fmt(value)} {_ci(ci)} p={_p(p)}"

    rows = []
    for j, r in enumerate(comps[0].envs):
        if r.heldout:
            rows.append([r.env, *(cell(c.envs[j].did, c.envs[j].did_ci, c.envs[j].did_p_perm) for c in comps)])
    for k, contrast in enumerate(comps[0].contrasts):
        rows.append([contrast.label, *(cell(c.contrasts[k].value, c.contrasts[k].ci, c.contrasts[k].p_perm) for c in comps)])
    for name, attr in ((f"median ({_aggregated(comps[0])})", "median"), (f"IQM ({_aggregated(comps[0])})", "iqm")):
        aggs = [c.aggregates["did"] for c in comps]
        rows.append([name, *(cell(getattr(a, attr), getattr(a, f"{attr}_ci"), getattr(a, f"{attr}_p_perm")) for a in aggs)])
    return columns, rows


RATIO_COLUMNS = [
    "split",
    "S_rims",
    "S_lstm",
    "S_random",
    "S_rims - S_lstm",
    "95% CI",
    "p Welch",
    "p perm.",
    "ratio",
    "ratio 95% CI",
    "S_rims / S_lstm",
    "note",
]


def ratio_rows(c: Comparison) -> list[list[str]]:
    """Per split: seed-mean scores, the difference and the score ratio with CIs and p-values; then median and IQM
    over held-out splits."""
    rows = [
        [
            r.env + ("" if r.heldout else " (training)"),
            _fmt(r.s_rims),
            _fmt(r.s_lstm),
            _fmt(r.s_random),
            _fmt(r.difference),
            _ci(r.difference_ci),
            _p(r.difference_p_welch),
            _p(r.difference_p_perm),
            _fmt(r.ratio),
            _ci(r.ratio_ci),
            _fmt(r.quotient),
            r.note,
        ]
        for r in c.envs
    ]
    d, q = c.aggregates["difference"], c.aggregates["ratio"]
    undefined = f"{q.n_envs_undefined} split(s) with undefined ratio left out" if q.n_envs_undefined else ""
    for name, dv, dci, dp, qv, qci in (
        ("median (held-out)", d.median, d.median_ci, d.median_p_perm, q.median, q.median_ci),
        ("IQM (held-out)", d.iqm, d.iqm_ci, d.iqm_p_perm, q.iqm, q.iqm_ci),
    ):
        rows.append([name, "", "", "", _fmt(dv), _ci(dci), "", _p(dp), _fmt(qv), _ci(qci), "", undefined])
    return rows


SCORE_COLUMNS = ["agent", "split", "actions", "return", "95% CI", "success", "95% CI ", "CI over", "runs", "episodes"]


def score_rows(summaries: Sequence[ScoreSummary]) -> list[list[str]]:
    """Per core (or agent, or random), split and action mode: mean return and success rate with intervals."""
    return [
        [
            s.agent,
            s.env,
            s.actions,
            _fmt(s.mean),
            _ci(s.ci),
            _fmt(s.success),
            _ci(s.success_ci),
            s.ci_unit,
            str(s.n_runs),
            str(s.n_episodes),
        ]
        for s in summaries
    ]


CORE_COLUMNS = ["core", "agents", "core parameters", "actor core", "state size (h)", "policy parameters"]


def core_rows(cores: dict[str, Any], agent_cores: dict[str, str | None]) -> list[list[str]]:
    """One row per core name: parameter counts (actor core plus a separate critic core) beside the state size.

    :param cores: agent label -> CoreInfo
    :param agent_cores: agent label -> core name
    """
    by_core: dict[str, list[Any]] = {}
    for label, info in cores.items():
        by_core.setdefault(agent_cores.get(label) or label, []).append(info)
    rows = []
    for name, infos in by_core.items():
        sizes = [(i.n_params, i.n_params_actor, i.state_size, i.n_params_policy) for i in infos]
        for n_params, n_actor, state, n_policy in sorted(set(sizes)):
            n = sizes.count((n_params, n_actor, state, n_policy))
            rows.append([name, str(n), f"{n_params:,}", f"{n_actor:,}", str(state), f"{n_policy:,}"])
    return rows


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def protocol_lines(comparisons: Sequence[Comparison], meta: dict[str, Any]) -> list[str]:
    """The sentences every number needs beside it: seeds, episodes, interval method, actions, p-values."""
    lines = []
    if comparisons:
        c = comparisons[0]
        counts = {r.env: r.n_episodes for r in c.envs}
        episodes = (f"{c.n_episodes} episodes per seed and split" if len(set(counts.values())) == 1 else
                    "episodes per seed: " + ", ".join(f"{n} on {s}" for s, n in counts.items()))  # fmt: skip
        lines.append(
            f"- Seeds per core: {c.n_seeds_rims} RIMs, {c.n_seeds_lstm} LSTM (the seed is the unit: episodes are "
            f"averaged within a seed first); {episodes}."
        )
        lines.append(f"- Intervals ({c.confidence:.0%}): {CI_METHOD_TEXT[c.ci_method]}.")
        lines.append(
            "- p-values: Welch t-test on seed means (per split) and a two-sided permutation test relabelling whole "
            f"seeds (exact when there are at most {c.n_permutations} relabellings, else {c.n_permutations} random ones; "
            "with 3 + 3 seeds the smallest possible value is 0.1)."
        )
        held = [r.env for r in c.envs if r.heldout]
        train = f"training split `{c.train_split}`; " if c.train_split else "no training split (no gap, no DiD); "
        over = "held-out splits only" if _aggregated(c) == "held-out" else f"only these held-out splits: {_aggregated(c)}"
        lines.append(f"- Splits: {train}held-out: {', '.join(held)}. Aggregates use {over}.")
    lines.append(
        f"- Actions: {', '.join(meta.get('actions_played', [])) or 'sampled'} (greedy = the policy's mode; sampled = "
        "drawn from it); the recurrent state is carried through every step in both."
    )
    if meta.get("command"):
        lines.append(f"- Command: `{meta['command']}`")
    return [line + "\n" for line in lines]


def report_markdown(
    comparisons: Sequence[Comparison],
    summaries: Sequence[ScoreSummary],
    meta: dict[str, Any],
    cores: dict[str, Any] | None = None,
    agent_cores: dict[str, str | None] | None = None,
) -> str:
    """The markdown report: protocol, cores, the DiD (headline), then scores and per-split differences/ratios.

    :param comparisons: every comparison (action mode x metric)
    :param summaries: per-core scores
    :param meta: run description (name, command, actions_played)
    :param cores: agent label -> CoreInfo
    :param agent_cores: agent label -> core name
    """
    md = [f"# Evaluation: {meta.get('name', '')}\n\n", *protocol_lines(comparisons, meta)]
    if cores:
        md += ["\n## Cores\n\n", markdown_table(CORE_COLUMNS, core_rows(cores, agent_cores or {}))]
        md.append("\nCore parameters: the recurrent core of the actor plus a separate critic core if the policy has one.\n")
    with_did = [c for c in comparisons if c.train_split is not None]
    if with_did:
        md.append(
            "\n## Generalization gap: difference-in-differences\n\n"
            "Gap of a seed = score on the training split - score on the held-out split. "
            "DiD = mean gap of the LSTM seeds - mean gap of the RIMs seeds: **> 0 favours RIMs**. "
            f"Each cell: DiD, its 95% interval ({with_did[0].ci_method}), permutation p-value.\n\n"
        )
        md.append(markdown_table(*headline_table(with_did)))
        for c in with_did:
            md += [f"\n### DiD, {_title(c)}\n\n", markdown_table(did_columns(), did_rows(c))]
    if summaries:
        md += ["\n## Scores\n\n", markdown_table(SCORE_COLUMNS, score_rows(summaries))]
    for c in comparisons:
        md += [
            f"\n## RIMs - LSTM and score ratio, {_title(c)}\n\n"
            "ratio = (S_rims - S_lstm) / (max(S_lstm, S_ref) - S_random), S_ref = "
            + ("1 (every episode succeeds)" if c.metric == "success" else "the maximum return or human score")
            + "; nan where the denominator is <= 0.\n\n",
            markdown_table(RATIO_COLUMNS, ratio_rows(c)),
        ]
    return "".join(md)


def print_tables(
    comparisons: Sequence[Comparison] | Comparison | None,
    summaries: Sequence[ScoreSummary],
    console: Any = None,
    cores: dict[str, Any] | None = None,
    agent_cores: dict[str, str | None] | None = None,
) -> None:
    """Print the DiD tables (headline), the core sizes, the scores and the difference/ratio tables with rich.

    :param comparisons: the comparisons (or one, or None)
    :param summaries: per-core scores
    :param console: a rich Console (default: stdout)
    :param cores: agent label -> CoreInfo
    :param agent_cores: agent label -> core name
    """
    from rich.console import Console
    from rich.table import Table

    if comparisons is None:
        comparisons = []
    elif isinstance(comparisons, Comparison):
        comparisons = [comparisons]
    if console is None:
        console = Console()
        if not console.is_terminal or console.width < 150:  # piped or narrow: do not squash the columns
            console = Console(width=150)

    def show(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        table = Table(title=title)
        for col in columns:
            table.add_column(col)
        for row in rows:
            table.add_row(*row)
        console.print(table)

    if cores:
        show("Cores", CORE_COLUMNS, core_rows(cores, agent_cores or {}))
    show("Scores (mean over seeds; t-intervals)", SCORE_COLUMNS, score_rows(summaries))
    for c in comparisons:
        show(f"Score ratio and RIMs - LSTM, {_title(c)} ({c.ci_method} intervals)", RATIO_COLUMNS, ratio_rows(c))
    for c in comparisons:
        if c.train_split is not None:
            title = f"Generalization gap DiD (> 0 favours RIMs), {_title(c)} ({c.ci_method} intervals)"
            show(title, did_columns(), did_rows(c))


def _csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(columns)
    writer.writerows(rows)
    return buf.getvalue()


_SPLIT_FIELDS = [
    "env",
    "env_id",
    "heldout",
    "s_rims",
    "s_lstm",
    "s_random",
    "s_ref",
    "difference",
    "difference_ci",
    "difference_p_welch",
    "difference_p_perm",
    "ratio",
    "ratio_ci",
    "quotient",
    "gap_rims",
    "gap_lstm",
    "did",
    "did_ci",
    "did_p_welch",
    "did_p_perm",
    "n_runs_rims",
    "n_runs_lstm",
    "n_episodes",
    "ratio_undefined",
    "note",
    "in_aggregate",
]


def comparison_csv(comparisons: Sequence[Comparison] | Comparison) -> str:
    """Every comparison's per-split rows and its held-out aggregates as CSV (numbers unrounded).

    Columns: metric, actions, ci_method, then the per-split fields (an interval as ``*_low``/``*_high``); a DiD
    contrast's row has env ``contrast:<a>|<b>`` and fills the did columns; aggregate rows have env "median"/"IQM"
    (over the splits whose ``in_aggregate`` is True) and fill the difference, ratio and did columns.
    """
    if isinstance(comparisons, Comparison):
        comparisons = [comparisons]
    columns = ["metric", "actions", "ci_method"]
    for f in _SPLIT_FIELDS:
        columns += [f"{f}_low", f"{f}_high"] if f.endswith("_ci") else [f]
    rows = []
    for c in comparisons:
        lead = [c.metric, c.actions, c.ci_method]
        for r in c.envs:
            values = []
            for f in _SPLIT_FIELDS:
                v = getattr(r, f)
                values += list(v) if f.endswith("_ci") else [v]
            rows.append(lead + values)
        for k in c.contrasts:
            cells = {"env": f"contrast:{k.split_a}|{k.split_b}", "heldout": True, "did": k.value, "did_ci_low": k.ci[0],
                     "did_ci_high": k.ci[1], "did_p_welch": k.p_welch, "did_p_perm": k.p_perm}  # fmt: skip
            rows.append(lead + [cells.get(col, "") for col in columns[3:]])
        for agg_name in ("median", "iqm"):
            row: dict[str, Any] = {"env": "median" if agg_name == "median" else "IQM", "heldout": True}
            for q in ("difference", "ratio", "did"):
                a = c.aggregates[q]
                row[q] = getattr(a, agg_name)
                row[f"{q}_ci_low"], row[f"{q}_ci_high"] = getattr(a, f"{agg_name}_ci")
                if q != "ratio":
                    row[f"{q}_p_perm"] = getattr(a, f"{agg_name}_p_perm")
            rows.append(lead + [row.get(col, "") for col in columns[3:]])
    return _csv(columns, rows)


def seeds_csv(result_episodes: dict[str, dict[str, dict[str, Any]]], agents: Sequence[Any], reported: dict[str, bool]) -> str:
    """Per agent (training seed), split and action mode: mean return and success rate over its episodes.

    :param result_episodes: action mode -> agent label -> split -> Episodes
    :param agents: the AgentSpecs (label, core, seed, path)
    :param reported: split -> whether the env reports success
    """
    rows = []
    for actions, per_agent in result_episodes.items():
        for a in agents:
            for split, eps in per_agent.get(a.label, {}).items():
                success = eps.success_values(reported.get(split, False))
                rows.append(
                    [
                        a.label,
                        a.core,
                        a.seed,
                        split,
                        actions,
                        float(np.mean(eps.returns)),
                        float(np.mean(success)) if success is not None else "",
                        len(eps.returns),
                        str(a.path),
                    ]
                )
    return _csv(["agent", "core", "seed", "split", "actions", "return", "success", "n_episodes", "path"], rows)


def episodes_csv(episodes: dict[str, dict[str, dict[str, Any]]], random: dict[str, Any], cores: dict[str, str | None]) -> str:
    """Every episode: agent, core, actions, env, episode, return, length, success (empty where not reported)."""
    rows = []

    def add(agent: str, core: Any, actions: str, env: str, eps: Any) -> None:
        succ = eps.successes if eps.successes is not None else np.full(len(eps.returns), np.nan)
        for i, (r, n, s) in enumerate(zip(eps.returns, eps.lengths, succ, strict=True)):
            rows.append([agent, core, actions, env, i, r, n, "" if not math.isfinite(s) else int(s)])

    for actions, per_agent in episodes.items():
        for agent, per_env in per_agent.items():
            for env, eps in per_env.items():
                add(agent, cores.get(agent), actions, env, eps)
    for env, eps in random.items():
        add("random", "random", "random", env, eps)
    return _csv(["agent", "core", "actions", "env", "episode", "return", "length", "success"], rows)


def _savefig(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bars_with_ci(ax: Any, x: np.ndarray, values: np.ndarray, cis: Sequence[Sequence[float]], **kwargs: Any) -> None:
    low = np.array([c[0] if math.isfinite(c[0]) else v for c, v in zip(cis, values, strict=True)])
    high = np.array([c[1] if math.isfinite(c[1]) else v for c, v in zip(cis, values, strict=True)])
    err = np.vstack([values - low, high - values]) if len(values) else None
    ax.bar(x, values, yerr=err, capsize=3, **kwargs)


def plot_ratios(comparison: Comparison, path: str | Path) -> None:
    """Bar chart of per-split ratios with their CIs, sorted (like the paper's Fig. 5); undefined ones skipped.

    :param comparison: the comparison
    :param path: PNG destination
    """
    plt = _pyplot()
    rows = sorted((r for r in comparison.envs if math.isfinite(r.ratio)), key=lambda r: r.ratio)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(rows) + 2), 4))
    values = np.array([r.ratio for r in rows])
    colors = ["tab:blue" if v >= 0 else "tab:red" for v in values]
    _bars_with_ci(ax, np.arange(len(rows)), values, [r.ratio_ci for r in rows], color=colors)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(rows)), [r.env + ("" if r.heldout else " (train)") for r in rows], rotation=60, ha="right")
    ax.set_ylabel("score ratio\n(S_rims - S_lstm) / (max(S_lstm, S_ref) - S_random)", fontsize=9)
    agg = comparison.aggregate
    ax.set_title(
        f"RIMs vs LSTM ({_title(comparison)}): held-out median {_fmt(agg.median)}, IQM {_fmt(agg.iqm)}\n"
        f"{comparison.n_seeds_rims}+{comparison.n_seeds_lstm} seeds, {comparison.ci_method} 95% CIs",
        fontsize=9,
    )
    _savefig(fig, Path(path))
    plt.close(fig)


def plot_did(comparisons: Sequence[Comparison], path: str | Path) -> None:
    """Grouped bars: the DiD per held-out split and its median/IQM, one bar per comparison, with CIs.

    :param comparisons: comparisons with a training split
    :param path: PNG destination
    """
    plt = _pyplot()
    comps = [c for c in comparisons if c.train_split is not None]
    labels = [r.env for r in comps[0].envs if r.heldout] + ["median", "IQM"] if comps else []
    width = 0.8 / max(1, len(comps))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(labels) + 2), 4))
    for k, c in enumerate(comps):
        rows: list[EnvComparison] = [r for r in c.envs if r.heldout]
        a = c.aggregates["did"]
        values = np.array([r.did for r in rows] + [a.median, a.iqm])
        cis = [r.did_ci for r in rows] + [a.median_ci, a.iqm_ci]
        x = np.arange(len(values)) + (k - (len(comps) - 1) / 2) * width
        _bars_with_ci(ax, x, values, cis, width=width, label=_title(c))
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(labels)), labels, rotation=30, ha="right")
    ax.set_ylabel("DiD = gap_lstm - gap_rims\n(> 0 favours RIMs)", fontsize=9)
    if comps:
        ax.set_title(
            f"Generalization gap, {comps[0].n_seeds_rims}+{comps[0].n_seeds_lstm} seeds, {comps[0].ci_method} 95% CIs",
            fontsize=9,
        )
        ax.legend(fontsize=8)
    _savefig(fig, Path(path))
    plt.close(fig)


def plot_splits(summaries: Sequence[ScoreSummary], path: str | Path, title: str = "Score per split") -> None:
    """Grouped bars: mean return (top) and success rate (bottom, when reported) per split, for each core / agent and
    the random policy, with CIs; one bar group per action mode.

    :param summaries: per-core, per-split summaries
    :param path: PNG destination
    :param title: plot title
    """
    plt = _pyplot()
    envs = list(dict.fromkeys(s.env for s in summaries))
    keys = list(dict.fromkeys((s.agent, s.actions) for s in summaries))
    by_key = {(s.agent, s.actions, s.env): s for s in summaries}
    panels = [("mean", "ci", "mean episode return")]
    if any(math.isfinite(s.success) for s in summaries):
        panels.append(("success", "success_ci", "success rate"))
    width = 0.8 / max(1, len(keys))
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(5.0, 1.8 * len(envs) + 2), 3.5 * len(panels)), squeeze=False)
    for ax, (attr, ci_attr, ylabel) in zip(axes[:, 0], panels, strict=True):
        for k, (agent, actions) in enumerate(keys):
            xs, ys, cis = [], [], []
            for j, env in enumerate(envs):
                s = by_key.get((agent, actions, env))
                if s is None or not math.isfinite(getattr(s, attr)):
                    continue
                xs.append(j + (k - (len(keys) - 1) / 2) * width)
                ys.append(getattr(s, attr))
                cis.append(getattr(s, ci_attr))
            one_mode = len({a for _, a in keys} - {"random"}) <= 1
            label = agent if actions == "random" or one_mode else f"{agent} ({actions})"
            _bars_with_ci(ax, np.array(xs), np.array(ys), cis, width=width, label=label)
        ax.set_xticks(np.arange(len(envs)), envs)
        ax.set_ylabel(ylabel)
    axes[0, 0].set_title(title)
    axes[0, 0].legend(fontsize=8)
    _savefig(fig, Path(path))
    plt.close(fig)


def write_outputs(
    out_dir: str | Path,
    comparisons: Sequence[Comparison] | Comparison | None,
    summaries: Sequence[ScoreSummary],
    result: Any,
    meta: dict[str, Any],
    split_plot: bool = True,
) -> dict[str, Path]:
    """Write report.md, ratios.csv, scores.csv, seeds.csv, episodes.csv, results.json and the plots.

    :param out_dir: destination folder
    :param comparisons: every comparison (action mode x metric); the first is the primary one (``results.json``'s
        ``comparison``)
    :param summaries: per-core scores
    :param result: the EvaluationResult (episodes, random baseline, agents, core sizes)
    :param meta: run description saved in results.json (command, checkpoints, setting, seeds, ...)
    :param split_plot: write splits.png
    :return: name -> path of every file written
    """
    if comparisons is None:
        comparisons = []
    elif isinstance(comparisons, Comparison):
        comparisons = [comparisons]
    out = Path(out_dir)
    files: dict[str, Path] = {}
    agent_cores = {a.label: a.core for a in result.agents}
    meta = {**meta, "actions_played": list(result.actions)}

    def write(name: str, text: str) -> None:
        files[name] = out / name
        atomic_write_text(files[name], text)

    write("report.md", report_markdown(comparisons, summaries, meta, result.cores, agent_cores))
    if comparisons:
        write("ratios.csv", comparison_csv(comparisons))
        files["ratios.png"] = out / "ratios.png"
        plot_ratios(comparisons[0], files["ratios.png"])
        if any(c.train_split is not None for c in comparisons):
            files["did.png"] = out / "did.png"
            plot_did(comparisons, files["did.png"])
    write(
        "scores.csv",
        _csv(
            [
                *["agent", "env", "env_id", "actions", "mean", "ci_low", "ci_high", "success", "success_ci_low"],
                *["success_ci_high", "ci_unit", "n_runs", "n_episodes", "per_seed", "success_per_seed"],
            ],
            [
                [
                    *[s.agent, s.env, s.env_id, s.actions, s.mean, *s.ci, s.success, *s.success_ci, s.ci_unit, s.n_runs],
                    *[s.n_episodes, " ".join(map(str, s.per_seed)), " ".join(map(str, s.success_per_seed))],
                ]
                for s in summaries
            ],
        ),
    )
    reported = {t.label: result.reports_success(t.label) for t in result.targets}
    write("seeds.csv", seeds_csv(result.episodes, result.agents, reported))
    write("episodes.csv", episodes_csv(result.episodes, result.random, agent_cores))
    if split_plot:
        files["splits.png"] = out / "splits.png"
        plot_splits(summaries, files["splits.png"], title=f"Score per split: {meta.get('name', '')}")
    data = {
        "meta": meta,
        "cores": {label: asdict(info) for label, info in result.cores.items()},
        "scores": [asdict(s) for s in summaries],
        "comparison": comparisons[0].to_dict() if comparisons else None,
        "comparisons": [c.to_dict() for c in comparisons],
    }
    write("results.json", json.dumps(_json_safe(data), indent=2) + "\n")
    return files

"""Held-out evaluation, the RIMs-versus-LSTM score ratio, statistics, tables, plots and videos."""

from rims_rl.evaluation.checkpoints import AgentSpec, load_model, resolve_agent, run_folder_checkpoint
from rims_rl.evaluation.report import atomic_write_text, new_output_dir, plot_ratios, plot_splits, print_tables, write_outputs
from rims_rl.evaluation.rollout import Episodes, UniformRandomAgent, active_units, check_spaces, run_episodes
from rims_rl.evaluation.runner import EvaluationResult, evaluate, evaluate_on_target
from rims_rl.evaluation.scores import (
    ATARI_RANDOM_HUMAN,
    HUMAN_SCORES,
    Comparison,
    EnvComparison,
    EnvScores,
    compare,
    reference_score,
    score_quotient,
    score_ratio,
    summarize_scores,
)
from rims_rl.evaluation.targets import EvalTarget, gym_targets, setting_targets
from rims_rl.evaluation.transfer import TransferScore, learning_curve, transfer_score
from rims_rl.evaluation.video import record_video

__all__ = [
    "ATARI_RANDOM_HUMAN",
    "HUMAN_SCORES",
    "AgentSpec",
    "Comparison",
    "EnvComparison",
    "EnvScores",
    "Episodes",
    "EvalTarget",
    "EvaluationResult",
    "TransferScore",
    "UniformRandomAgent",
    "active_units",
    "atomic_write_text",
    "check_spaces",
    "compare",
    "evaluate",
    "evaluate_on_target",
    "gym_targets",
    "learning_curve",
    "load_model",
    "new_output_dir",
    "plot_ratios",
    "plot_splits",
    "print_tables",
    "record_video",
    "reference_score",
    "resolve_agent",
    "run_episodes",
    "run_folder_checkpoint",
    "score_quotient",
    "score_ratio",
    "setting_targets",
    "summarize_scores",
    "transfer_score",
    "write_outputs",
]

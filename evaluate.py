"""Evaluate checkpoints on held-out envs and compare RIMs with the LSTM: see docs/evaluation.md."""

from rims_rl.cli.evaluate import main

if __name__ == "__main__":  # --jobs workers are spawned processes, which import this file again
    raise SystemExit(main())

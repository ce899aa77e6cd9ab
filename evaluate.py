"""Evaluate checkpoints on held-out envs and compare RIMs with the LSTM: see docs/evaluation.md."""

from rims_rl.cli.evaluate import main

raise SystemExit(main())

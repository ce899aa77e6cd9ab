"""Train an agent: see ``python train.py --help`` (same as the ``rims-train`` console script)."""

from rims_rl.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())

"""Run a sweep: see ``python sweep.py --help`` (same as the ``rims-sweep`` console script)."""

from rims_rl.sweep import main

if __name__ == "__main__":
    raise SystemExit(main())

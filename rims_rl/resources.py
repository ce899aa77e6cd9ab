"""Where the package's data lives: settings (``envs/``), hyperparameters (``agents/``) and the zoo (``zoo/``).

In a source checkout (and an editable install) these are the repository's top-level folders. A built wheel carries
copies of them as package data under ``rims_rl/_data/`` (see ``setup.py``), found with :mod:`importlib.resources`, so an
installed package needs no checkout. Environment variables still override each one (see the modules that use them).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

#: The data folders shipped with the package.
DATA_FOLDERS = ("envs", "agents", "zoo")


def data_dir(name: str) -> Path:
    """
    :param name: one of :data:`DATA_FOLDERS`
    :return: the folder: the wheel's package data if present, else the source checkout's top-level folder
    """
    if name not in DATA_FOLDERS:
        raise ValueError(f"unknown data folder {name!r}; valid: {', '.join(DATA_FOLDERS)}")
    packaged = files("rims_rl").joinpath("_data", name)
    if packaged.is_dir():
        return Path(str(packaged))  # an installed wheel is a plain folder on disk
    return Path(__file__).resolve().parent.parent / name

"""Build hook: copy the top-level data folders (settings, hyperparameters, zoo) into the wheel as package data.

Everything else is in pyproject.toml. The folders stay at the top of the repository (rl-zoo's layout); a wheel
carries them under ``rims_rl/_data/`` where :func:`rims_rl.resources.data_dir` finds them.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DATA = {"envs": ("*.yml",), "agents": ("*.yml",), "zoo": ("manifest.json", "agents/*")}


class BuildPyWithData(build_py):
    """build_py that also copies :data:`DATA` into ``rims_rl/_data/``."""

    def run(self) -> None:
        super().run()
        root = Path(__file__).resolve().parent
        for folder, patterns in DATA.items():
            for pattern in patterns:
                for source in sorted((root / folder).glob(pattern)):
                    if source.is_file():
                        target = Path(self.build_lib) / "rims_rl" / "_data" / source.relative_to(root)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(source, target)


setup(cmdclass={"build_py": BuildPyWithData})

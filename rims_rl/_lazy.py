"""Names a package serves on first use (PEP 562), so that importing it does not import torch and SB3."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any


def lazy_attribute(namespace: dict[str, Any], table: Mapping[str, str], package: str, name: str) -> Any:
    """
    :param namespace: the package's ``globals()`` (the value is cached there)
    :param table: name -> module that defines it
    :param package: the package's name, for the error
    :param name: the attribute asked for
    :return: the attribute, imported from its module
    :raises AttributeError: a name the table does not hold
    """
    if name not in table:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(table[name]), name)
    namespace[name] = value
    return value

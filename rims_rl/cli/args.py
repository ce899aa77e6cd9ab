"""Command-line pieces shared by ``rims-train`` and ``rims-evaluate``: one-line usage errors, positive numbers, help
that states each default once. Imports nothing heavy (``--help`` stays fast)."""

from __future__ import annotations

import argparse
import typing


class CliError(Exception):
    """A user error reported as one line (no traceback), exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors raise :class:`CliError` (one line, exit code 2, no usage block)."""

    def error(self, message: str) -> typing.NoReturn:
        """:param message: argparse's message, reported by ``main`` as ``<prog>: error: <message> (see --help)``"""
        raise CliError(f"{message} (see --help)")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` only for options whose help does not already state its default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        unset = any(action.default is value for value in (None, False, argparse.SUPPRESS)) or action.default == []
        if "(default" in help_text or unset or not action.option_strings:
            return help_text
        return super()._get_help_string(action)


def _int_at_least(text: str, minimum: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a {what} integer, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be a {what} integer, got {value}")
    return value


def positive_int(text: str) -> int:
    """
    :param text: a command-line value
    :return: the value, an integer >= 1
    :raises argparse.ArgumentTypeError: otherwise
    """
    return _int_at_least(text, 1, "positive")


def non_negative_int(text: str) -> int:
    """
    :param text: a command-line value
    :return: the value, an integer >= 0
    :raises argparse.ArgumentTypeError: otherwise
    """
    return _int_at_least(text, 0, "non-negative")

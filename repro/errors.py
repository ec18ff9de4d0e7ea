"""User-facing errors: one line, non-zero exit, nothing written."""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

T = TypeVar("T")


class ReproError(Exception):
    """A problem with the user's input (config, data, paths). Printed as one line, exit code 2."""


class ConfigError(ReproError):
    pass


class DataError(ReproError):
    pass


def one_line(message: str) -> str:
    """The message on one line: control characters a user typed into a value (a newline, a carriage return)
    written as escapes (`\\r`), so that the error stays one line whatever the input."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in message)


def exit_on_user_error(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn a ReproError raised by a CLI entry point into `error: <message>` and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ReproError as exc:
            print(f"error: {one_line(str(exc))}", file=sys.stderr)
            sys.exit(2)

    return wrapper

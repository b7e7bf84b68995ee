"""The argument parser every ``chainwatch`` command uses, and the checks it runs."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

Check = Callable[[argparse.Namespace], str | None]


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line that says where to look next.

    ``checks`` (see :func:`pipeline.cli.common.add_check`) look at a command's arguments
    together once they are parsed, e.g. ``--start-block`` after ``--end-block``; the problem
    one returns fails the command the same way as a bad value, before anything runs.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.checks: list[Check] = []

    def parse_known_args(self, args: Iterable[str] | None = None,
                         namespace: Any = None) -> tuple[Any, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        for check in self.checks:
            problem = check(parsed)
            if problem is not None:
                self.error(problem)
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")

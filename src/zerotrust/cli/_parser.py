"""The argument parser of every ``zerotrust`` command: usage errors in the one-line format."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

__all__ = ["Parser", "command_group"]


class Parser(argparse.ArgumentParser):
    """Reports a usage error as every other failure is reported: one line,
    ``zerotrust: error: [usage_error] message``, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"zerotrust: error: [usage_error] {message} (see: {self.prog} --help)\n")


def command_group(commands: Any, name: str, help: str) -> Any:
    """A command whose subcommands are required (``zerotrust NAME SUBCOMMAND``): the
    subparsers object to add them to."""
    group = commands.add_parser(name, help=help)
    return group.add_subparsers(dest=f"{name}_command", required=True, parser_class=type(group))

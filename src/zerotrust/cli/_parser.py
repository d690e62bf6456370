"""The argument parser of every ``zerotrust`` command: usage errors in the one-line format."""

from __future__ import annotations

import argparse
from typing import NoReturn

__all__ = ["Parser"]


class Parser(argparse.ArgumentParser):
    """Reports a usage error as every other failure is reported: one line,
    ``zerotrust: error: [usage_error] message``, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"zerotrust: error: [usage_error] {message} (see: {self.prog} --help)\n")

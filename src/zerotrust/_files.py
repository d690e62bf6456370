"""Reading files whose paths users give: regular files only, never blocking on open."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

__all__ = ["NotARegularFile", "open_regular_file", "read_regular_file", "same_file"]

_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
# O_NONBLOCK: opening a FIFO without a writer returns at once instead of waiting for one
# (forever, on whichever thread asked: an event loop included). O_NOCTTY: a terminal is
# never made the process's controlling terminal.
_FLAGS = (
    os.O_RDONLY
    | _NONBLOCK
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_BINARY", 0)
)
_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


class NotARegularFile(OSError):
    """A path that names a directory, FIFO, socket or device where a file was expected:
    reading it could block forever or never end, so it is refused before any read."""

    def __init__(self, path: str | os.PathLike[str], mode: int) -> None:
        if stat.S_ISDIR(mode):
            code, reason = errno.EISDIR, os.strerror(errno.EISDIR)
        else:
            kind = next((name for test, name in _KINDS if test(mode)), "not a file")
            code, reason = errno.EINVAL, f"not a regular file ({kind})"
        super().__init__(code, reason, os.fspath(path))

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def open_regular_file(path: str | os.PathLike[str]) -> BinaryIO:
    """``path`` opened for reading, once ``fstat`` shows a regular file (symbolic links are
    followed). Raises ``OSError``: :class:`NotARegularFile` for anything else."""
    fd = os.open(path, _FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(path, mode)
        if _NONBLOCK:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_file(path: str | os.PathLike[str], limit: int) -> bytes:
    """At most ``limit + 1`` bytes of the regular file ``path``: more than ``limit`` means the
    file is too large, and the caller refuses it without having read it all."""
    with open_regular_file(path) as file:
        return file.read(limit + 1)


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether ``a`` and ``b`` name one file: the same path once resolved (whether or not it
    exists yet), or two names of one existing file (a hard link, or letter case on a file
    system that ignores it)."""
    if Path(a).resolve() == Path(b).resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False

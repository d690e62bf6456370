"""Secrets and file paths in settings: read, decoded and checked without being shown."""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from zerotrust._config_schema import Secret
from zerotrust._config_sources import (
    MAX_DEPTH,
    DuplicateKey,
    Info,
    Origin,
    check_document,
    env_name,
    fail,
    json_document,
)
from zerotrust._files import open_regular_file, read_regular_file
from zerotrust.errors import ConfigurationError

__all__ = ["file_path", "pairs", "read_secret_file", "secret"]

_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
_MAX_SECRET_FILE_BYTES = 64 * 1024


def pairs(text: str, label: str, *, secret: bool) -> dict[str, str]:
    """``name=value`` items separated by commas (or newlines), or a JSON object; a name given
    twice is refused in either form."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            document = check_document(json_document(stripped), label)
        except RecursionError:
            raise fail(label, f"is nested deeper than {MAX_DEPTH} levels") from None
        except json.JSONDecodeError as exc:
            raise fail(label, f"not valid JSON (at position {exc.pos})") from None
        except DuplicateKey as exc:
            raise fail(label, f"not valid JSON ({exc})") from None
        except ValueError:  # an integer of more digits than Python converts
            raise fail(label, "not valid JSON (a number too long)") from None
        return document  # type: ignore[no-any-return]  # "{" starts an object or nothing
    out: dict[str, str] = {}
    for index, item in enumerate(stripped.replace("\n", ",").split(",")):
        name, sep, item_value = item.strip().partition("=")
        if not item.strip():
            continue
        if not sep or not name.strip() or not item_value.strip():
            shown = f"item {index + 1}" if secret else repr(item.strip()[:60])
            raise fail(label, f"{shown} is not name=value (separate items with commas)")
        if name.strip() in out:  # as in a JSON object (DuplicateKey): no silent last one
            shown = f"item {index + 1}" if secret else repr(name.strip()[:60])
            raise fail(label, f"{shown}: a name given twice (each name once)")
        out[name.strip()] = item_value.strip()
    return out


def file_path(value: Any, origin: Origin, *, what: str = "") -> str:
    """A readable file's absolute path; relative paths in a file are relative to its directory,
    others to the working directory when the settings are loaded."""
    label = f"{origin.label}[{what}]" if what else origin.label
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise fail(label, "must be a file path")
    path = Path(value)
    if origin.base is not None and not path.is_absolute():
        path = origin.base / path
    try:
        with open_regular_file(path):
            pass
    except OSError as exc:
        raise fail(label, f"cannot read {str(path)!r} ({exc.strerror})") from None
    except ValueError:  # a NUL byte or a lone surrogate: no file has that name
        raise fail(label, "must be a file path") from None
    # resolved now: the file checked is the file used, whatever the working directory later
    return str(path.absolute())


def read_secret_file(path: str, origin: Origin) -> str:
    try:
        data = read_regular_file(path, _MAX_SECRET_FILE_BYTES)
    except OSError as exc:  # pragma: no cover - file_path() checked it; unless it just vanished
        raise fail(origin.label, f"cannot read {path!r} ({exc.strerror})") from None
    if len(data) > _MAX_SECRET_FILE_BYTES:
        raise fail(origin.label, f"{path!r} is larger than {_MAX_SECRET_FILE_BYTES} bytes")
    try:
        text: str | None = data.decode("utf-8").strip()
    except UnicodeDecodeError:  # its repr holds the file's bytes: raised with no context
        text = None
    if text is None:
        raise fail(origin.label, f"{path!r} is not UTF-8 text (write hex or base64)")
    if not text:
        raise fail(origin.label, f"{path!r} is empty")
    return text


def secret(info: Info, value: Any, origin: Origin) -> Secret[Any]:
    label = origin.label
    if origin.kind == "file" and not origin.path[-1].endswith("_file"):
        raise fail(
            label,
            "secrets are not read from configuration files: set "
            f"{env_name(origin.path)} or {info.name}_file (a file holding the secret)",
        )
    form = info.meta["sensitive"]
    if form == "bytes":
        return Secret(_key_bytes(value, label))
    if form == "map":
        table = value if isinstance(value, Mapping) else None
        if table is None and isinstance(value, str):
            table = pairs(value, label, secret=True)
        if not table or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in table.items()
        ):
            raise fail(label, "must map key ids to SHA-256 hex digests (value not shown)")
        return Secret(MappingProxyType(dict(table)))
    if not isinstance(value, str) or not value:
        raise fail(label, "must be a non-empty string (value not shown)")
    return Secret(value)


def _key_bytes(value: Any, label: str) -> bytes:
    """Key material from hex or base64 (standard or URL-safe, padding optional) text."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if not isinstance(value, str):
        raise fail(label, "must be hex or base64 text (value not shown)")
    text = value.strip()
    if _HEX.fullmatch(text):
        return bytes.fromhex(text)
    padded = text.replace("-", "+").replace("_", "/").rstrip("=")
    padded += "=" * (-len(padded) % 4)
    try:
        decoded = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if not decoded:
        raise ConfigurationError(f"{label}: must be hex or base64 (value not shown)")
    return decoded

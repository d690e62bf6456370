"""Reading settings and policy documents: TOML, YAML (PyYAML) or JSON, chosen by suffix."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zerotrust._config_sources import MAX_DEPTH, DuplicateKey, check_document, fail, json_document
from zerotrust._files import read_regular_file
from zerotrust.authz.loader import MAX_POLICY_BYTES
from zerotrust.errors import MissingDependencyError

__all__ = ["freeze", "read_document", "thaw"]

_MAX_FILE_BYTES = MAX_POLICY_BYTES  # one bound for settings and policy files


def read_document(path: Path, label: str) -> Any:
    """Parse a TOML, YAML or JSON file; errors name ``label`` and never quote the file."""
    try:
        data = read_regular_file(path, _MAX_FILE_BYTES)
    except OSError as exc:
        raise fail(label, f"cannot read {str(path)!r} ({exc.strerror})") from None
    if len(data) > _MAX_FILE_BYTES:
        raise fail(label, f"{str(path)!r} is larger than {_MAX_FILE_BYTES} bytes")
    suffix = path.suffix.lower()
    try:
        text: str | None = data.decode("utf-8")
    except UnicodeDecodeError:  # its repr holds the file's bytes: raised with no context
        text = None
    if text is None:
        raise fail(label, f"{str(path)!r} is not UTF-8 text")
    try:
        named = f"{label}: {str(path)!r}"
        if suffix == ".toml":
            return check_document(_toml_loads(text), named)
        if suffix in (".yaml", ".yml"):
            return check_document(_yaml_loads(text, label, path), named)
        if suffix == ".json":
            return check_document(json_document(text), named)
    except RecursionError:  # the parser's own stack: deeper than any bound
        raise fail(label, f"{str(path)!r} is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # TOMLDecodeError and JSONDecodeError are ValueErrors
        if isinstance(exc, json.JSONDecodeError):
            where = f"line {exc.lineno}, column {exc.colno}"
        else:
            where = str(exc)  # tomllib: "Invalid value (at line 3, column 10)", no excerpt
        raise fail(label, f"{str(path)!r} is not valid {suffix[1:].upper()} ({where})") from None
    raise fail(label, f"{str(path)!r}: unknown format (use .toml, .yaml, .yml or .json)")


def _toml_loads(text: str) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib.loads(text)


def _yaml_loads(text: str, label: str, path: Path) -> Any:
    try:
        import yaml
    except ModuleNotFoundError as exc:
        raise MissingDependencyError("pyyaml", "yaml", error=exc) from exc
    try:
        return yaml.load(text, Loader=_unique_key_loader(yaml))  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        # the message only, never the excerpt of the file PyYAML adds (it may hold a secret)
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "syntax error"
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise fail(label, f"{str(path)!r} is not valid YAML ({problem}{where})") from None


_LOADERS: dict[str, Any] = {}


def _unique_key_loader(yaml: Any) -> Any:
    """PyYAML's SafeLoader, refusing a mapping that names a key twice (it keeps the last)."""
    loader = _LOADERS.get("unique")
    if loader is not None:
        return loader

    class UniqueKeyLoader(yaml.SafeLoader):  # type: ignore[misc]
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                # merge keys (<<) first, as SafeLoader does: a key merged twice, or merged and
                # written too, is named twice (the later one would win silently)
                self.flatten_mapping(node)
                seen: set[Any] = set()
                for key_node, _ in node.value:
                    key = self.construct_object(key_node, deep=deep)
                    try:
                        duplicate = key in seen
                        seen.add(key)
                    except TypeError:  # unhashable: SafeLoader refuses it below
                        continue
                    if duplicate:
                        raise yaml.constructor.ConstructorError(
                            None, None, str(DuplicateKey(key)), key_node.start_mark
                        )
            return super().construct_mapping(node, deep)

    _LOADERS["unique"] = UniqueKeyLoader
    return UniqueKeyLoader


def freeze(value: Any) -> Any:
    """A read-only copy of a JSON-like document."""
    if isinstance(value, Mapping):
        return types.MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """A mutable (dict/list) copy of a :func:`freeze` result."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value

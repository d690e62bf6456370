"""Where settings come from: a ``zerotrust`` table (from a file or from code) and
``ZEROTRUST_*`` variables, each read into a *layer*.

Each source becomes a *layer*: ``{path: (raw value, origin)}`` where ``path`` is the key
path inside the ``zerotrust`` table (``("tokens", "leeway")``) and ``origin`` says where the
value came from, for error messages. Layers are merged (a later layer replaces single keys;
setting one member of an exclusive group, e.g. a key source, drops the other members set by
earlier layers) and then converted into the section dataclasses of
:mod:`zerotrust._config_schema` by :mod:`zerotrust._config_values`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Union

from zerotrust._config_schema import Secret
from zerotrust.errors import ConfigurationError

__all__ = [
    "ENV_CONFIG",
    "ENV_NOT_SETTINGS",
    "ENV_PREFIX",
    "MAX_DEPTH",
    "MAX_VALUES",
    "DuplicateKey",
    "Info",
    "Layer",
    "Origin",
    "check_document",
    "env_layer",
    "env_name",
    "fail",
    "group_of",
    "json_document",
    "mapping_layer",
    "merge",
    "resolve",
    "sections_of",
]

ENV_PREFIX = "ZEROTRUST_"
#: The variable that names the settings file (a ``ZEROTRUST_*`` variable that is not a setting).
ENV_CONFIG = "ZEROTRUST_CONFIG"
#: The variables that are not settings: the settings file's, and the files that
#: ``zerotrust.adapters.gunicorn.ZeroTrustTLS.from_env`` serves with (one deployment may set both).
ENV_NOT_SETTINGS: Final = frozenset(
    {
        ENV_CONFIG,
        "ZEROTRUST_SVID_CERT",
        "ZEROTRUST_SVID_KEY",
        "ZEROTRUST_BUNDLE",
        "ZEROTRUST_TRUST_DOMAIN",
    }
)
SECTION = object()  # the value recorded for "this table was given"


def fail(label: str, message: str) -> ConfigurationError:
    return ConfigurationError(f"{label}: {message}")


#: Bounds of a settings or policy document (a file, or JSON in an environment variable).
MAX_DEPTH = 32
MAX_VALUES = 100_000


class DuplicateKey(ValueError):
    """A JSON or YAML object names a key twice: parsers keep the last silently, so a second
    ``"action"`` would turn a DENY rule into an ALLOW one. TOML refuses it itself."""

    def __init__(self, key: object) -> None:
        super().__init__(f"duplicate key {str(key)[:64]!r}")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(key)
        out[key] = value
    return out


def json_document(text: str) -> Any:
    """``json.loads`` refusing an object that names a key twice (:class:`DuplicateKey`)."""
    return json.loads(text, object_pairs_hook=_unique)


def check_document(document: Any, label: str) -> Any:
    """``document`` if it is nested at most :data:`MAX_DEPTH` deep and, when YAML aliases
    make parts of it shared, holds at most :data:`MAX_VALUES` values counting every use of
    them (the copies made of an alias bomb would otherwise exhaust memory). A document
    without aliases is bounded by the size of its file."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    seen: set[int] = set()
    shared = False
    values = 0
    while stack:
        value, depth = stack.pop()
        values += 1
        if isinstance(value, Mapping):
            children: Any = value.values()
        elif isinstance(value, (list, tuple)):
            children = value
        else:
            continue
        if depth > MAX_DEPTH:
            raise fail(label, f"is nested deeper than {MAX_DEPTH} levels")
        if id(value) in seen:
            shared = True  # a YAML alias: this part is used again
        seen.add(id(value))
        if shared and values > MAX_VALUES:
            raise fail(label, f"holds more than {MAX_VALUES} values once its aliases are used")
        stack.extend((child, depth + 1) for child in children)
    return document


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a value came from: a file, a mapping passed by code, or an environment variable."""

    kind: Literal["file", "dict", "env"]
    source: str  # file name, "<dict>", or the variable's name
    path: tuple[str, ...]
    base: Path | None = None  # relative paths in a file are relative to its directory

    @property
    def label(self) -> str:
        if self.kind == "env":
            return self.source
        return f"{self.source}: {'.'.join(self.path)}" if self.path else self.source


Layer = dict[tuple[str, ...], tuple[Any, Origin]]


@dataclass(frozen=True, slots=True)
class Info:
    """One setting of a section, as the readers see it."""

    name: str
    kind: Literal["section", "str", "int", "float", "bool", "list", "map", "json", "secret"]
    optional: bool
    required: bool
    choices: tuple[str, ...] | None
    section: type | None
    meta: Mapping[str, Any]


def _analyse(hint: Any) -> tuple[str, bool, tuple[str, ...] | None, type | None]:
    optional = False
    if typing.get_origin(hint) in (Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        optional, hint = True, members[0]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return "json", True, None, None
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return "section", optional, None, hint
    if hint in (str, int, float, bool):
        return hint.__name__, optional, None, None
    if origin is Literal:
        return "str", optional, tuple(args), None
    if origin is tuple:
        item = args[0]
        choices = tuple(typing.get_args(item)) if typing.get_origin(item) is Literal else None
        return "list", optional, choices, None
    if origin is Secret:
        return "secret", optional, None, None
    assert origin is Mapping, hint
    return "map", optional, None, None


@functools.cache
def sections_of(cls: type) -> Mapping[str, Info]:
    """The settings of a section class, by name (internal fields left out)."""
    hints = typing.get_type_hints(cls)
    infos = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        kind, optional, choices, section = _analyse(hints[f.name])
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        infos[f.name] = Info(f.name, kind, optional, required, choices, section, f.metadata)  # type: ignore[arg-type]
    return types.MappingProxyType(infos)


def resolve(cls: type, key: str) -> tuple[Info, bool] | None:
    """The setting ``key`` names in ``cls``, and whether it is the ``<secret>_file`` form."""
    infos = sections_of(cls)
    info = infos.get(key)
    if info is not None:
        return info, False
    if key.endswith("_file"):
        info = infos.get(key[: -len("_file")])
        if info is not None and info.kind == "secret":
            return info, True
    return None


def _names(cls: type) -> list[str]:
    out = []
    for info in sections_of(cls).values():
        out.append(info.name)
        if info.kind == "secret":
            out.append(f"{info.name}_file")
    return out


def _all_paths(cls: type, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for info in sections_of(cls).values():
        if info.kind == "section" and info.section is not None:
            out += _all_paths(info.section, (*prefix, info.name))
        else:
            out.append((*prefix, info.name))
            if info.kind == "secret":
                out.append((*prefix, f"{info.name}_file"))
    return out


def env_name(path: tuple[str, ...]) -> str:
    """The environment variable of a setting: ``ZEROTRUST_TOKENS__LEEWAY``."""
    return ENV_PREFIX + "__".join(part.upper() for part in path)


def group_of(info: Info) -> str | None:
    group: str | None = info.meta.get("group")
    if group is None and info.kind == "secret":
        group = f"secret:{info.name}"
    return group


def _unknown(root: type, cls: type, key: str, label: str) -> ConfigurationError:
    match = difflib.get_close_matches(key, _names(cls), n=1, cutoff=0.6)
    if match:
        hint = f" (did you mean {match[0]!r}?)"
    else:
        elsewhere = [".".join(p) for p in _all_paths(root) if p[-1] == key and len(p) > 1]
        hint = f" (did you mean {elsewhere[0]!r}?)" if elsewhere else ""
    return fail(label, f"unknown setting{hint}")


def mapping_layer(
    document: object,
    root: type,
    *,
    kind: Literal["file", "dict"],
    source: str,
    base: Path | None = None,
) -> Layer:
    """The layer of a parsed ``zerotrust`` table (from a file or from code)."""
    layer: Layer = {}
    if not isinstance(document, Mapping):
        raise fail(source, "the zerotrust settings must be a table/mapping")
    _walk(document, root, root, (), layer, kind=kind, source=source, base=base)
    return layer


def _walk(
    doc: Mapping[Any, Any],
    root: type,
    cls: type,
    prefix: tuple[str, ...],
    layer: Layer,
    *,
    kind: Literal["file", "dict"],
    source: str,
    base: Path | None,
) -> None:
    for key, value in doc.items():
        path = (*prefix, str(key))
        origin = Origin(kind, source, path, base)
        found = resolve(cls, key) if isinstance(key, str) else None
        if found is None:
            raise _unknown(root, cls, str(key), origin.label)
        info = found[0]
        if info.kind == "section" and info.section is not None:
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise fail(origin.label, "must be a table/mapping")
            layer[path] = (SECTION, origin)
            _walk(value, root, info.section, path, layer, kind=kind, source=source, base=base)
        elif value is not None:  # None (YAML null) means "not set"
            layer[path] = (value, origin)


def env_layer(env: Mapping[str, str], root: type) -> Layer:
    """The layer of the ``ZEROTRUST_*`` variables; an unknown one is an error naming it, and
    so are two that name the same setting (names are read case-insensitively: one would
    silently win)."""
    layer: Layer = {}
    named: dict[tuple[str, ...], str] = {}
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or var in ENV_NOT_SETTINGS:
            continue
        parts = var[len(ENV_PREFIX) :].lower().split("__")
        cls, path = root, tuple[str, ...]()
        for index, part in enumerate(parts):
            found = resolve(cls, part) if part else None
            last = index == len(parts) - 1
            info = found[0] if found is not None else None
            if info is None or (info.kind != "section" and not last):
                known = [env_name(p) for p in _all_paths(root)] + [ENV_CONFIG]
                match = difflib.get_close_matches(var, known, n=1, cutoff=0.75)
                hint = f" (did you mean {match[0]}?)" if match else ""
                raise fail(var, f"unknown setting{hint}")
            path = (*path, part)
            origin = Origin("env", var, path)
            if info.kind == "section" and info.section is not None:
                if last:
                    raise fail(var, f"{'.'.join(path)} is a table: set {var}__<SETTING>")
                layer.setdefault(path, (SECTION, origin))
                cls = info.section
            else:
                if path in named:
                    raise fail(
                        var,
                        f"sets {'.'.join(path)}, as {named[path]} does: set it with one variable",
                    )
                named[path] = var
                layer[path] = (env[var], origin)
    return layer


def _info_at(root: type, path: tuple[str, ...]) -> Info | None:
    cls: type | None = root
    info = None
    for part in path:
        found = resolve(cls, part) if cls is not None else None
        if found is None:
            return None
        info = found[0]
        cls = info.section
    return info


def merge(lower: Layer, upper: Layer, root: type) -> Layer:
    """``upper`` over ``lower``; a group member in ``upper`` drops the group from ``lower``."""
    result = dict(lower)
    for path in upper:
        info = _info_at(root, path)
        group = group_of(info) if info is not None else None
        if group is None:
            continue
        for other in list(result):
            if other[:-1] == path[:-1] and other not in upper:
                other_info = _info_at(root, other)
                if other_info is not None and group_of(other_info) == group:
                    del result[other]
    result.update(upper)
    for path, marker in lower.items():  # a section keeps the origin that opened it first
        info = _info_at(root, path)
        if path in upper and info is not None and info.kind == "section":
            result[path] = marker
    return result

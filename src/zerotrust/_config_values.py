"""Converting a merged layer into section dataclasses: types, bounds, paths and secrets.

Values from files and code are checked as they are (``leeway = "60"`` is an error); values
from environment variables are parsed from text (numbers, ``true``/``false``, lists as
``a,b`` or JSON, tables as ``name=value,...`` or JSON). Error messages name the setting and
never quote a secret.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from zerotrust._config_files import freeze
from zerotrust._config_schema import Secret
from zerotrust._config_secrets import file_path, pairs, read_secret_file, secret
from zerotrust._config_sources import (
    MAX_DEPTH,
    DuplicateKey,
    Info,
    Layer,
    Origin,
    check_document,
    env_name,
    fail,
    json_document,
    sections_of,
)

__all__ = ["construct", "recheck"]

_S = TypeVar("_S")

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_INT = re.compile(r"[+-]?[0-9]{1,18}")
#: Larger integers are refused before any float() of them can overflow.
_MAX_INT = 10**18


def construct(
    cls: type, layer: Layer, prefix: tuple[str, ...], where: Origin, origins: dict[str, str]
) -> dict[str, Any]:
    """The constructor arguments of ``cls`` at ``prefix``; records each value's origin."""
    kwargs: dict[str, Any] = {}
    for info in sections_of(cls).values():
        path = (*prefix, info.name)
        dotted = ".".join(path)
        if info.kind == "section" and info.section is not None:
            marker = layer.get(path)
            if marker is not None:
                origins[dotted] = marker[1].label
                section_args = construct(info.section, layer, path, marker[1], origins)
                kwargs[info.name] = info.section(**section_args)
            continue
        entry = layer.get(path)
        if info.kind == "secret":
            entry = _secret_entry(info, layer, path, entry)
        if entry is None:
            if not info.required:
                continue
            if where.kind == "env":
                section = ".".join(prefix)
                raise fail(env_name(path), f"required ({where.source} configures {section})")
            raise fail(f"{where.source}: {dotted}", f"required (or set {env_name(path)})")
        value, origin = entry
        origins[dotted] = origin.label
        kwargs[info.name] = convert(info, value, origin)
    return kwargs


def recheck(section: _S, cls: type, label: str) -> _S:
    """Check again the plain values (booleans, numbers, strings, lists and their choices) of a
    section object built or replaced by code, as the readers check them: ``"false"`` never
    reads as true, and ``sinks="logging"`` is no list of sinks. Returns the section with its
    file paths made absolute (a copy, if one was not), as the readers make them: the file
    checked now is the file used, whatever the working directory is when a Guard is built."""
    if section is None:
        return section
    if not isinstance(section, cls):
        raise fail(label, f"must be a {cls.__name__}")
    fixed: dict[str, Any] = {}
    for info in sections_of(cls).values():
        value = getattr(section, info.name)
        where = f"{label}.{info.name}"
        if info.kind == "section" and info.section is not None:
            checked = recheck(value, info.section, where)
            if checked is not value:
                fixed[info.name] = checked
        elif info.kind == "secret" and value is not None:
            # a plain value here would show in repr and to_dict(), and fail where it is used
            if not isinstance(value, Secret):
                raise fail(where, "must be a zerotrust.config.Secret: Secret(value) (not shown)")
            secret(info, value.reveal(), Origin("dict", where, ()))
        elif value is not None and info.meta.get("path"):  # a path, or a table of paths
            absolute = convert(info, value, Origin("dict", where, ()))
            if absolute != value:
                fixed[info.name] = absolute
        elif value is not None and info.kind in ("bool", "int", "float", "list", "map", "str"):
            convert(info, value, Origin("dict", where, ()))
    return dataclasses.replace(section, **fixed) if fixed else section  # type: ignore[type-var]


def _secret_entry(
    info: Info, layer: Layer, path: tuple[str, ...], direct: tuple[Any, Origin] | None
) -> tuple[Any, Origin] | None:
    via_file = layer.get((*path[:-1], f"{info.name}_file"))
    if direct is not None and via_file is not None:
        raise fail(direct[1].label, f"conflicts with {via_file[1].label}: set one of them")
    if via_file is None:
        return direct
    value, origin = via_file
    if value is None or value == "":
        return None
    return read_secret_file(file_path(value, origin), origin), origin


def convert(info: Info, value: Any, origin: Origin) -> Any:
    """``value`` as the type ``info`` declares (``origin`` says how to read it)."""
    env = origin.kind == "env"
    label = origin.label
    if value is None or (env and value == ""):
        if info.optional and not (value == "" and info.meta.get("nonempty")):
            return None
        if env and info.kind == "list":
            return ()
        raise fail(label, "must not be empty" if env else "required")
    kind = info.kind
    if kind == "secret":
        return secret(info, value, origin)
    if kind == "json":
        return freeze(_json(value, label) if env else value)
    if kind == "list":
        return _list(info, value, origin)
    if kind == "map":
        return _map(info, value, origin)
    if kind == "bool":
        return _bool(value, env, label)
    if kind in ("int", "float"):
        return _bounded(info, _number(kind, value, env, label), label)
    if info.meta.get("path"):
        return file_path(value, origin)
    return _string(info, value, label)


def _string(info: Info, value: Any, label: str) -> str:
    if not isinstance(value, str):
        raise fail(label, "must be a string")
    if not value:
        raise fail(label, "must not be empty")
    if info.choices is not None and value not in info.choices:
        raise fail(label, f"must be one of {_choices(info.choices)} (got {value[:40]!r})")
    return value


def _choices(choices: tuple[str, ...]) -> str:
    return ", ".join(repr(c) for c in choices)


def _bool(value: Any, env: bool, label: str) -> bool:
    if env:
        lowered = value.strip().lower()
        if lowered in _TRUE or lowered in _FALSE:
            return lowered in _TRUE
        raise fail(label, "not a boolean (use true or false)")
    if not isinstance(value, bool):
        raise fail(label, "must be true or false")
    return value


def _number(kind: str, value: Any, env: bool, label: str) -> float:
    if env:
        text = value.strip()
        if kind == "int":
            if not _INT.fullmatch(text):
                raise fail(label, "not an integer")
            return int(text)
        try:
            number = float(text)
        except ValueError:
            raise fail(label, "not a number") from None
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail(label, "must be an integer" if kind == "int" else "must be a number")
    elif kind == "int" and not isinstance(value, int):
        raise fail(label, "must be an integer")
    else:
        number = value
    if isinstance(number, int) and abs(number) > _MAX_INT:
        raise fail(label, "is out of range")  # float() of it would overflow
    if not math.isfinite(number):
        raise fail(label, "must be a finite number")
    return float(number) if kind == "float" else number


def _bounded(info: Info, number: float, label: str) -> float:
    low = info.meta.get("min")
    if low is not None and number < low:
        raise fail(label, f"must be at least {low}")
    above = info.meta.get("above")
    if above is not None and number <= above:
        raise fail(label, f"must be greater than {above}")
    high = info.meta.get("max")
    if high is not None and number > high:
        raise fail(label, f"must be at most {high}")
    return number


def _json(text: str, label: str) -> Any:
    try:
        return check_document(json_document(text), label)
    except RecursionError:
        raise fail(label, f"is nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise fail(label, f"not valid JSON ({exc.msg} at position {exc.pos})") from None
    except DuplicateKey as exc:
        raise fail(label, f"not valid JSON ({exc})") from None
    except ValueError:  # an integer of more digits than Python converts
        raise fail(label, "not valid JSON (a number too long)") from None


def _list(info: Info, value: Any, origin: Origin) -> tuple[str, ...]:
    label = origin.label
    if origin.kind == "env":
        text = value.strip()
        items: Any = _json(text, label) if text.startswith("[") else text.split(",")
        if isinstance(items, list) and text[:1] != "[":
            items = [item.strip() for item in items]
    elif isinstance(value, str) and info.meta.get("many"):
        items = [value]
    else:
        items = value
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise fail(label, "must be a list of strings")
    for item in items:
        if not item:
            raise fail(label, "has an empty item")
        if info.choices is not None and item not in info.choices:
            raise fail(label, f"{item[:40]!r} is not one of {_choices(info.choices)}")
    if len(set(items)) != len(items):
        raise fail(label, "lists a value twice")
    return tuple(items)


def _map(info: Info, value: Any, origin: Origin) -> Mapping[str, str]:
    label = origin.label
    entries = pairs(value, label, secret=False) if origin.kind == "env" else value
    if not isinstance(entries, Mapping):
        raise fail(label, "must be a table/mapping")
    out = {}
    for name, item in entries.items():
        if not isinstance(name, str) or not name:  # YAML allows any key type
            raise fail(label, "keys must be non-empty strings")
        out[name] = file_path(item, origin, what=f"{name!r}")  # tables hold file paths
    if not out:
        raise fail(label, "must not be empty")
    return MappingProxyType(out)

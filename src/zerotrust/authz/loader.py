"""Load policies from dicts, TOML, YAML or JSON files, strictly.

Unknown keys, wrong types and bad patterns are a :class:`~zerotrust.errors.ConfigurationError`
at load time that names the file and the key (``orders.toml: rules[2].from[0].spife_ids:
unknown key``), never a surprise on the first request.

Document shape (Istio's vocabulary)::

    id = "orders"
    default = "deny"          # or "allow" (explicit only)
    dry_run = false

    [[rules]]
    id = "web-reads-orders"
    action = "ALLOW"          # ALLOW | DENY | CUSTOM
    scopes = ["orders:read"]  # ALLOW only; any_scopes = [...] for "at least one of"
    dry_run = false
    hook = "opa"              # CUSTOM only: a name from the hooks= mapping

    [[rules.from]]            # callers; any entry may match
    spiffe_ids = ["spiffe://example.org/ns/shop/sa/web"]

    [[rules.to]]              # operations; any entry may match
    methods = ["GET"]
    routes = ["/orders/{order_id}"]

    [[rules.when]]            # conditions; all must match
    key = "claims.tenant"
    values = ["acme"]

    [[rate_limits]]
    id = "per-caller"
    rate = 10.0               # tokens per second
    burst = 20
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from zerotrust.authz.policy import Policy, RateLimit
from zerotrust.authz.rules import Callers, Condition, Operations, Rule, ScopeRule
from zerotrust.errors import ConfigurationError

__all__ = ["MAX_POLICY_BYTES", "load_policy", "policy_from_dict"]

#: The largest policy file read (the bound of every settings file too).
MAX_POLICY_BYTES = 1 << 20

_CALLER_KEYS = {f.name for f in Callers.__dataclass_fields__.values() if f.init}
_OPERATION_KEYS = {f.name for f in Operations.__dataclass_fields__.values() if f.init}
_RULE_KEYS = {
    "id",
    "action",
    "from",
    "to",
    "when",
    "scopes",
    "any_scopes",
    "dry_run",
    "hook",
    "hook_timeout",
}
_POLICY_KEYS = {"id", "default", "dry_run", "rules", "rate_limits"}
_LIMIT_KEYS = {"id", "rate", "burst", "from", "to"}
_CONDITION_KEYS = {"key", "values", "not_values"}


#: A key left out of the document (``None`` is an explicit ``null``, which is refused).
_ABSENT: Final[Any] = object()


class _Ctx:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> ConfigurationError:
        if not where:  # the document itself
            return ConfigurationError(f"{self.source}: {message}")
        return ConfigurationError(f"{self.source}: {where}: {message}")

    def table(self, value: Any, where: str, allowed: set[str]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(where, "must be a table/object")
        for key in value:
            if key not in allowed:
                raise self.fail(f"{where}.{key}" if where else str(key), "unknown key")
        return value

    def items(self, value: Any, where: str) -> list[Any]:
        if value is _ABSENT:
            return []
        if value is None:  # an emptied `from:` would otherwise read as "anyone"
            raise self.fail(where, "must be a list (leave the key out for none)")
        if not isinstance(value, list):
            raise self.fail(where, "must be a list")
        return value

    def build(self, where: str, factory: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return factory(**kwargs)
        except ConfigurationError as exc:
            raise self.fail(where, str(exc)) from None
        except (TypeError, ValueError) as exc:
            raise self.fail(where, f"invalid value ({exc})") from None


def policy_from_dict(
    document: Mapping[str, Any],
    *,
    hooks: Mapping[str, Callable[..., Any]] | None = None,
    source: str = "<dict>",
) -> Policy:
    """Build a :class:`Policy` from a parsed document (see the module docs for its shape)."""
    ctx = _Ctx(source)
    doc = ctx.table(document, "", _POLICY_KEYS)
    rules = [
        _rule(ctx, raw, f"rules[{i}]", hooks or {})
        for i, raw in enumerate(ctx.items(doc.get("rules", _ABSENT), "rules"))
    ]
    limits = [
        _limit(ctx, raw, f"rate_limits[{i}]")
        for i, raw in enumerate(ctx.items(doc.get("rate_limits", _ABSENT), "rate_limits"))
    ]
    policy: Policy = ctx.build(
        "policy",
        Policy,
        rules=rules,
        id=doc.get("id", "default"),
        default=doc.get("default", "deny"),
        dry_run=_bool(ctx, doc.get("dry_run", False), "dry_run"),
        rate_limits=limits,
    )
    return policy


def _bool(ctx: _Ctx, value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ctx.fail(where, "must be true or false")
    return value


def _callers(ctx: _Ctx, value: Any, where: str) -> list[Callers]:
    out = []
    for i, raw in enumerate(ctx.items(value, where)):
        entry = ctx.table(raw, f"{where}[{i}]", _CALLER_KEYS)
        out.append(ctx.build(f"{where}[{i}]", Callers, **entry))
    return out


def _operations(ctx: _Ctx, value: Any, where: str) -> list[Operations]:
    out = []
    for i, raw in enumerate(ctx.items(value, where)):
        entry = ctx.table(raw, f"{where}[{i}]", _OPERATION_KEYS)
        out.append(ctx.build(f"{where}[{i}]", Operations, **entry))
    return out


def _rule(ctx: _Ctx, raw: Any, where: str, hooks: Mapping[str, Callable[..., Any]]) -> Rule:
    entry = ctx.table(raw, where, _RULE_KEYS)
    conditions = []
    for i, cond in enumerate(ctx.items(entry.get("when", _ABSENT), f"{where}.when")):
        table = ctx.table(cond, f"{where}.when[{i}]", _CONDITION_KEYS)
        conditions.append(ctx.build(f"{where}.when[{i}]", Condition, **table))
    scopes = None
    if "scopes" in entry or "any_scopes" in entry:
        scopes = ctx.build(
            f"{where}.scopes",
            ScopeRule,
            all=entry.get("scopes", ()),
            any=entry.get("any_scopes", ()),
        )
    hook = None
    if "hook" in entry:
        name = entry["hook"]
        if not isinstance(name, str) or name not in hooks:
            known = ", ".join(sorted(hooks)) or "none registered"
            raise ctx.fail(f"{where}.hook", f"unknown hook {name!r} (known: {known})")
        hook = hooks[name]
    if entry.get("action", "ALLOW") != "DENY":
        for key, names in (("from", "caller"), ("to", "operation")):
            if entry.get(key) == []:  # an emptied list, as an entry that names nothing
                raise ctx.fail(
                    f"{where}.{key}",
                    f"an empty list would admit every {names}: leave the key out to say that",
                )
    return ctx.build(  # type: ignore[no-any-return]
        where,
        Rule,
        id=entry.get("id"),
        action=entry.get("action", "ALLOW"),
        callers=_callers(ctx, entry.get("from", _ABSENT), f"{where}.from"),
        operations=_operations(ctx, entry.get("to", _ABSENT), f"{where}.to"),
        when=conditions,
        scopes=scopes,
        dry_run=_bool(ctx, entry.get("dry_run", False), f"{where}.dry_run"),
        hook=hook,
        hook_timeout=entry.get("hook_timeout", 1.0),
    )


def _limit(ctx: _Ctx, raw: Any, where: str) -> RateLimit:
    entry = ctx.table(raw, where, _LIMIT_KEYS)
    return ctx.build(  # type: ignore[no-any-return]
        where,
        RateLimit,
        id=entry.get("id"),
        rate=entry.get("rate"),
        burst=entry.get("burst"),
        callers=_callers(ctx, entry.get("from", _ABSENT), f"{where}.from"),
        operations=_operations(ctx, entry.get("to", _ABSENT), f"{where}.to"),
    )


def load_policy(
    path: str | os.PathLike[str], *, hooks: Mapping[str, Callable[..., Any]] | None = None
) -> Policy:
    """Load a policy file: ``.toml``, ``.yaml``/``.yml`` (needs PyYAML) or ``.json``, read as
    settings files are (at most :data:`MAX_POLICY_BYTES`, UTF-8, bounded nesting)."""
    from zerotrust._config_files import read_document  # (the settings import this module)

    file = Path(path)
    document = read_document(file, "policy file")
    return policy_from_dict(document, hooks=hooks, source=str(file))

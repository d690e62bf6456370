"""Write the API reference (``docs/api/*.md``) from the public modules' ``__all__``.

    python docs/gen_api.py          # rewrite the pages
    python docs/gen_api.py --check  # exit 1 if a page is out of date (the test suite asks)

Each public module gets a page listing every name of its ``__all__``: signature, docstring
(reST roles and literals turned into Markdown, links to the other entries) and the public
methods and properties a class defines itself. An object is described once, on the most
specific page exporting it (``zerotrust.tokens`` rather than ``zerotrust``); the other pages
link to it. Module constants carry the ``#:`` comment written above them in the source, or the
string literal right after them.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import functools
import importlib
import inspect
import re
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "api"

#: (module, what the page is about), in the order of the reference's index.
PAGES: tuple[tuple[str, str], ...] = (
    ("zerotrust", "The package: identities, trust, tokens, the Guard, policy, audit, stores."),
    ("zerotrust.identity", "SPIFFE IDs and trust domains."),
    ("zerotrust.match", "Matchers for SPIFFE IDs."),
    ("zerotrust.x509", "X.509-SVIDs, trust bundles, peer verification, SSL contexts."),
    ("zerotrust.tokens", "Signed tokens: keys, verification, issuing, outgoing token sources."),
    ("zerotrust.tokens.outgoing", "Outgoing tokens: minting, caching and refreshing."),
    ("zerotrust.sources", "Key, token and identity sources: files, JWKS, OAuth 2.0, SPIRE."),
    ("zerotrust.authn", "Authentication: credentials, principals, DPoP, forwarded certificates."),
    ("zerotrust.authn.proxy", "Certificates forwarded by trusted proxies (XFCC, RFC 9440, nginx)."),
    ("zerotrust.authz", "Authorization: policies, rules, requirements."),
    ("zerotrust.audit", "Audit events, sinks and OpenTelemetry."),
    ("zerotrust.stores", "Shared state: revocation, replay cache, rate limits (memory, Redis)."),
    ("zerotrust.config", "Settings from files, the environment and Django settings."),
    ("zerotrust.errors", "The error hierarchy and its machine-readable codes."),
    ("zerotrust.dev", "The development certificate authority."),
    ("zerotrust.asgi", "Pure ASGI middleware and ASGI servers with mTLS."),
    ("zerotrust.fastapi", "FastAPI and Starlette."),
    ("zerotrust.wsgi", "WSGI middleware."),
    ("zerotrust.flask", "Flask."),
    ("zerotrust.django", "Django and Django REST framework."),
    ("zerotrust.adapters.gunicorn", "gunicorn workers that serve mTLS with zerotrust's context."),
    ("zerotrust.adapters.werkzeug", "The werkzeug development server with mTLS."),
    ("zerotrust.grpc", "gRPC server interceptors and client channels, sync and aio."),
    ("zerotrust.httpx", "httpx clients: mTLS, tokens, retries, trace context."),
)

_ROLE = re.compile(r":(?:py:)?(class|func|meth|attr|exc|data|mod|obj|const):`(~?)([^`]+)`")
_LITERAL = re.compile(r"``(.+?)``")
_EMPHASIS = re.compile(
    r"((?<![\w*])\*\*?[^*\s](?:[^*]*[^*\s])?\*?\*(?![\w*]))"  # reST *emphasis*, **strong**
)
_MAX_DEFAULT = 60
_ERROR_FIELDS = ("code", "public_code", "public_message", "http_status", "grpc_status")

#: What :func:`render_all` found without a docstring (or ``#:`` comment), by dotted name.
UNDOCUMENTED: list[str] = []


@dataclasses.dataclass
class Entry:
    page: str
    anchor: str  # "" for the top of the page


class Index:
    """Where each dotted name is described."""

    def __init__(self) -> None:
        self.by_name: dict[str, Entry] = {}

    def add(self, names: list[str], entry: Entry) -> None:
        for name in names:
            self.by_name.setdefault(name, entry)

    def resolve(self, target: str, context: list[str]) -> Entry | None:
        target = target.removesuffix("()")
        # relative names: in the class, its module, the page, the package
        candidates = [target, *(f"{prefix}.{target}" for prefix in context)]
        for name in candidates:
            entry = self.by_name.get(name)
            if entry is not None:
                return entry
        return None


def _href(entry: Entry, page: str) -> str:
    if not entry.anchor:
        return f"{entry.page}.md"
    anchor = _aid(entry.anchor)
    return f"#{anchor}" if entry.page == page else f"{entry.page}.md#{anchor}"


def _is_proxy(obj: object) -> bool:
    """A context-local proxy (``werkzeug.local.LocalProxy``): never touched outside a request."""
    return type(obj).__name__ == "LocalProxy"


def _is_constant(obj: object) -> bool:
    if _is_proxy(obj):
        return True
    return not (inspect.isclass(obj) or inspect.ismodule(obj) or callable(obj))


def _public(module: Any) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        raise SystemExit(f"{module.__name__} has no __all__")
    return list(names)


def _own_members(cls: type) -> Iterator[tuple[str, Any]]:
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if (
            isinstance(value, (staticmethod, classmethod))
            or inspect.isfunction(value)
            or isinstance(value, (property, functools.cached_property))
        ):
            yield name, value


def _source_comments() -> dict[str, str]:
    """``#:`` comments written directly above module-level assignments, by name."""
    comments: dict[str, str] = {}
    for path in sorted((ROOT / "src" / "zerotrust").rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        body = ast.parse("\n".join(lines)).body
        for position, node in enumerate(body):
            targets: list[str] = []
            if isinstance(node, ast.Assign):
                targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                targets = [node.target.id]
            elif sys.version_info >= (3, 12) and isinstance(node, ast.TypeAlias):
                targets = [node.name.id]  # pragma: no cover - Python 3.12+
            if not targets:
                continue
            above: list[str] = []
            row = node.lineno - 2
            while row >= 0 and lines[row].strip().startswith("#:"):
                above.insert(0, lines[row].strip()[2:].strip())
                row -= 1
            text = " ".join(above)
            following = body[position + 1] if position + 1 < len(body) else None
            if (  # an attribute docstring: a string literal right after the assignment
                not text
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                text = inspect.cleandoc(following.value.value)
            if text:
                for target in targets:
                    comments.setdefault(target, text)
    return comments


# --- rendering ----------------------------------------------------------------------------------


def _annotation(value: Any) -> str:
    if isinstance(value, str):
        return value
    return inspect.formatannotation(value)


def _value(value: Any) -> str:
    """A constant's value, the same in every run (sets are shown sorted)."""
    if isinstance(value, (frozenset, set)):
        inner = ", ".join(sorted(repr(v) for v in value))
        return f"{type(value).__name__}({{{inner}}})" if value else f"{type(value).__name__}()"
    return repr(value)


def _default(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    text = _value(value)
    if " at 0x" in text or len(text) > _MAX_DEFAULT:
        return "..."
    return text


def _parameters(signature: inspect.Signature, *, skip_first: bool) -> list[str]:
    rendered: list[str] = []
    star_done = False
    params = list(signature.parameters.values())
    if skip_first and params:
        params = params[1:]
    for index, param in enumerate(params):
        kind = param.kind
        if kind is param.POSITIONAL_ONLY and (
            index + 1 == len(params) or params[index + 1].kind is not param.POSITIONAL_ONLY
        ):
            suffix = ", /"
        else:
            suffix = ""
        if kind is param.KEYWORD_ONLY and not star_done:
            rendered.append("*")
            star_done = True
        prefix = {param.VAR_POSITIONAL: "*", param.VAR_KEYWORD: "**"}.get(kind, "")
        if kind is param.VAR_POSITIONAL:
            star_done = True
        text = prefix + param.name
        if param.annotation is not param.empty:
            text += f": {_annotation(param.annotation)}"
        if param.default is not param.empty:
            text += (
                f" = {_default(param.default)}" if ":" in text else f"={_default(param.default)}"
            )
        rendered.append(text + suffix)
    if rendered and rendered[-1].endswith(", /"):
        rendered[-1] = rendered[-1][:-3]
        rendered.append("/")
    return rendered


def _signature_line(head: str, params: list[str], returns: str | None) -> str:
    tail = f" -> {returns}" if returns else ""
    flat = f"{head}({', '.join(params)}){tail}"
    if len(flat) <= 96:
        return flat
    inner = "".join(f"    {p},\n" for p in params)
    return f"{head}(\n{inner}){tail}"


def _constructs(cls: type) -> bool:
    """Whether ``cls`` (or a zerotrust base) defines how it is built."""
    return any(
        (
            klass.__module__.startswith("zerotrust")
            and ("__init__" in vars(klass) or "__new__" in vars(klass))
        )
        or dataclasses.is_dataclass(klass)
        for klass in cls.__mro__
    )


def _signature(obj: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(obj, follow_wrapped=True)
    except (TypeError, ValueError):
        return None


def _returns(signature: inspect.Signature) -> str | None:
    if signature.return_annotation is signature.empty:
        return None
    return _annotation(signature.return_annotation)


def _code_block(lines: list[str], language: str) -> list[str]:
    width = min((len(x) - len(x.lstrip()) for x in lines if x.strip()), default=0)
    return [f"```{language}", *(x[width:] for x in lines), "```"]


def _escape_prose(text: str) -> str:
    """Escape what Markdown would read as HTML or emphasis, outside code spans."""
    parts = re.split(r"(`[^`]*`)", text)
    for i in range(0, len(parts), 2):
        part = parts[i].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        kept = _EMPHASIS.split(part)  # reST *emphasis* is Markdown's too; other stars are text
        for j in range(0, len(kept), 2):
            kept[j] = kept[j].replace("*", "\\*").replace("__", "\\_\\_")
        parts[i] = "".join(kept)
    return "".join(parts)


def _join_broken_literals(text: str) -> str:
    """A ``literal`` broken over two lines becomes one line (Markdown spans cannot break).
    Marks pair up in order, the first opening and the second closing."""
    pieces = text.split("``")
    for i in range(1, len(pieces), 2):  # the odd pieces are inside a literal
        if "\n" in pieces[i] and "\n\n" not in pieces[i]:
            pieces[i] = re.sub(r"\s*\n\s*", " ", pieces[i])
    text = "``".join(pieces)
    # so does *emphasis* broken over two lines
    return re.sub(
        r"(?<![\w*`])\*([^\s*`][^*`\n]*)\n\s*([^*`\n]*[^\s*`])\*(?![\w*])", r"*\1 \2*", text
    )


class Converter:
    """reST docstrings to Markdown."""

    def __init__(self, index: Index, page: str) -> None:
        self.index = index
        self.page = page

    def link(self, code: str, target: str, context: list[str]) -> str:
        entry = self.index.resolve(target, context)
        if entry is None:
            return f"`{code}`"
        href = _href(entry, self.page)
        return f"[`{code}`]({href})"

    def inline(self, text: str, context: list[str]) -> str:
        pieces: list[str] = []
        last = 0
        for match in _ROLE.finditer(text):
            pieces.append(self._literals(text[last : match.start()]))
            role, tilde, target = match.groups()
            target = target.strip()
            shown = target.rsplit(".", 1)[-1] if tilde else target
            if role in ("func", "meth") and not shown.endswith(")"):
                shown += "()"
            pieces.append(self.link(shown, target, context))  # modules link to their pages
            last = match.end()
        pieces.append(self._literals(text[last:]))
        return "".join(pieces)

    @staticmethod
    def _literals(text: str) -> str:
        out: list[str] = []
        last = 0
        for match in _LITERAL.finditer(text):
            out.append(_escape_prose(text[last : match.start()]))
            out.append(f"`{match.group(1)}`")
            last = match.end()
        out.append(_escape_prose(text[last:]))
        return "".join(out)

    def block(self, doc: str | None, context: list[str]) -> list[str]:
        if not doc:
            return []
        text = inspect.cleandoc(doc)
        text = _join_broken_literals(text)
        text = re.sub(  # and so does a role broken over two lines
            r"(:\w+:`[^`\n]+)\n\s*([^`\n]+`)",
            lambda m: m.group(1) + ("" if m.group(1).endswith(".") else " ") + m.group(2),
            text,
        )
        lines = text.splitlines()
        out: list[str] = []
        i = 0
        while i < len(lines):
            line = lines[i]
            stripped = line.strip()
            if stripped.startswith(">>>"):
                chunk = []
                while i < len(lines) and lines[i].strip():
                    chunk.append(re.sub(r"\s*# doctest:.*$", "", lines[i]))
                    i += 1
                out += ["", *_code_block(chunk, "pycon"), ""]
                continue
            directive = re.match(r"\.\. code(?:-block)?::\s*(\w*)", stripped)
            if directive or (stripped.endswith("::") and not stripped.startswith("..")):
                language = "text"
                if directive:
                    language = {"python": "py", "": "text"}.get(
                        directive.group(1), directive.group(1)
                    )
                elif stripped[:-2].rstrip():
                    out.append(self.inline(line.rstrip()[:-2].rstrip() + ":", context))
                i += 1
                while i < len(lines) and not lines[i].strip():
                    i += 1
                base = len(line) - len(line.lstrip())
                chunk = []
                while i < len(lines) and (
                    not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > base
                ):
                    chunk.append(lines[i])
                    i += 1
                while chunk and not chunk[-1].strip():
                    chunk.pop()
                out += ["", *_code_block(chunk, language), ""]
                continue
            bullet = re.match(r"^(\s*(?:[*-]|\d+\.) )", line)
            if bullet:  # the list marker is Markdown's too
                out.append(bullet.group(1) + self.inline(line[bullet.end() :], context))
            else:
                out.append(self.inline(line, context) if stripped else "")
            i += 1
        # Markdown needs a blank line before a list that follows a paragraph
        fixed: list[str] = []
        for row in out:
            starts_list = re.match(r"^\s*([*-]|\d+\.) ", row) is not None
            if (
                starts_list
                and fixed
                and fixed[-1].strip()
                and not re.match(r"^\s*([*-]|\d+\.) ", fixed[-1])
                and not fixed[-1].startswith(" ")
            ):
                fixed.append("")
            fixed.append(row)
        return fixed


# --- pages --------------------------------------------------------------------------------------


def _kind(obj: Any) -> str:
    if inspect.ismodule(obj):
        return "module"
    if _is_proxy(obj):
        return "context-local proxy"
    if inspect.isclass(obj):
        if issubclass(obj, BaseException):
            return "exception"
        if getattr(obj, "_is_protocol", False):
            return "protocol"
        if issubclass(obj, enum.Enum):
            return "enum"
        return "class"
    if inspect.iscoroutinefunction(obj):
        return "async function"
    if inspect.isroutine(obj) or callable(obj):
        return "function"
    return "constant"


def _alias_kind(obj: Any) -> bool:
    if _is_proxy(obj):
        return False
    origin = typing.get_origin(obj)
    return origin is not None or type(obj).__name__ in ("UnionType", "TypeAliasType")


def build_index() -> Index:
    """Where each object is described: on the most specific page exporting it (the
    ``zerotrust.tokens`` page rather than ``zerotrust``; the first such page on a tie)."""
    index = Index()
    exports: list[tuple[str, str, Any]] = []
    homes: dict[int, tuple[str, str]] = {}  # id(obj) -> (page, name there)
    for page, _ in PAGES:
        module = importlib.import_module(page)
        for name in _public(module):
            obj = getattr(module, name)
            exports.append((page, name, obj))
            if inspect.ismodule(obj) or (_is_constant(obj) and not _alias_kind(obj)):
                continue
            home = homes.get(id(obj))
            if home is None or page.count(".") > home[0].count("."):
                homes[id(obj)] = (page, name)
    for page, _ in PAGES:
        index.by_name[page] = Entry(page, "")
    for page, name, obj in exports:
        qualified = f"{page}.{name}"
        if inspect.ismodule(obj):  # a module with a page of its own
            index.by_name.setdefault(qualified, Entry(obj.__name__, ""))
            continue
        if _is_constant(obj) and not _alias_kind(obj):
            index.by_name.setdefault(qualified, Entry(page, qualified))
            continue
        home_page, home_name = homes[id(obj)]
        home = f"{home_page}.{home_name}"
        entry = Entry(home_page, home)
        names = [qualified]
        defined = getattr(obj, "__module__", None)
        if defined and hasattr(obj, "__qualname__"):
            names.append(f"{defined}.{obj.__qualname__}")
        index.add(names, entry)
        if inspect.isclass(obj):
            for member, _value in _own_members(obj):
                member_entry = Entry(home_page, f"{home}.{member}")
                for alias in names:
                    index.by_name.setdefault(f"{alias}.{member}", member_entry)
    return index


def render_page(page: str, about: str, index: Index, comments: dict[str, str]) -> str:
    module = importlib.import_module(page)
    convert = Converter(index, page)
    out = [
        "<!-- Generated by docs/gen_api.py from the docstrings: edit those, then run it. -->",
        "",
        f"# `{page}`",
        "",
        *(convert.block(module.__doc__, [page, "zerotrust"]) or [about]),
        "",
    ]
    names = _public(module)
    out += ["| name | kind |", "|---|---|"]
    for name in names:
        obj = getattr(module, name)
        entry = index.by_name[f"{page}.{name}"]
        href = _href(entry, page)
        kind = "type alias" if _alias_kind(obj) else _kind(obj)
        out.append(f"| [`{name}`]({href}) | {kind} |")
    out.append("")
    described = [
        (name, getattr(module, name))
        for name in names
        if index.by_name[f"{page}.{name}"].page == page  # else on the page exporting it first
    ]
    # The modules that define what this page describes, when they have no page of their own:
    # their documentation is what "see the module documentation" refers to.
    pages = {name for name, _ in PAGES}
    homes: list[str] = []
    for _, obj in described:
        home = getattr(obj, "__module__", None)
        if (
            isinstance(home, str)
            and home.startswith("zerotrust.")
            and not any(part.startswith("_") for part in home.split("."))
            and home not in pages
            and home not in homes
            and (sys.modules[home].__doc__ or "").strip()
        ):
            homes.append(home)
    for home in homes:
        out += [f"## About `{home}`", ""]
        out += convert.block(sys.modules[home].__doc__, [home, page, "zerotrust"])
        out.append("")
    for name, obj in described:
        out += _render_object(convert, page, name, obj, comments)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).rstrip() + "\n"


def _anchor_heading(level: int, text: str, anchor: str) -> str:
    return f"{'#' * level} {text} {{ #{_aid(anchor)} }}"


def _aid(anchor: str) -> str:
    """An anchor id Markdown keeps as written (``__`` would be read as emphasis)."""
    return anchor.replace("__", "")


def _render_object(
    convert: Converter, page: str, name: str, obj: Any, comments: dict[str, str]
) -> list[str]:
    qualified = f"{page}.{name}"
    context = [qualified, page, "zerotrust"]
    if getattr(obj, "__module__", None):
        context.insert(1, obj.__module__)
    out = [_anchor_heading(2, f"`{name}`", qualified), ""]
    if _is_constant(obj) or _alias_kind(obj):
        return out + _render_constant(convert, qualified, obj, comments.get(name), context)
    if inspect.isclass(obj):
        out += _class_header(convert, name, obj, context)
    else:
        signature = _signature(obj)
        prefix = "async def" if _kind(obj) == "async function" else "def"
        params = _parameters(signature, skip_first=False) if signature else ["..."]
        returns = _returns(signature) if signature else None
        out += _code_block(_signature_line(f"{prefix} {name}", params, returns).splitlines(), "py")
    doc = obj.__doc__ if inspect.isclass(obj) else inspect.getdoc(obj)
    if not (doc or "").strip():
        UNDOCUMENTED.append(qualified)
    out += ["", *convert.block(doc, context)]
    if inspect.isclass(obj):
        out += _class_body(convert, qualified, obj, context)
    out.append("")
    return out


def _render_constant(
    convert: Converter, qualified: str, obj: Any, doc: str | None, context: list[str]
) -> list[str]:
    name = qualified.rsplit(".", 1)[-1]
    if _is_proxy(obj):
        value = "LocalProxy(...)"
    elif _alias_kind(obj):
        value = re.sub(r"\btyping\.", "", str(obj))
    else:
        value = _value(obj)
    out = _code_block([f"{name} = {value}"], "py")
    if doc:
        out += ["", *convert.block(doc, context)]
    elif not _is_proxy(obj):
        UNDOCUMENTED.append(qualified)
    return [*out, ""]


def _class_header(convert: Converter, name: str, cls: type, context: list[str]) -> list[str]:
    kind = _kind(cls)
    head = "exception" if kind == "exception" else "class"
    signature = _signature(cls) if kind in ("class", "exception") and _constructs(cls) else None
    if signature is not None:
        line = _signature_line(f"{head} {name}", _parameters(signature, skip_first=False), None)
    else:
        line = f"{head} {name}"
    out = _code_block(line.splitlines(), "py")
    shown = [_base(convert, base, context) for base in cls.__bases__]
    if any(shown):
        out += ["", "Bases: " + ", ".join(b for b in shown if b)]
    return out


def _base(convert: Converter, base: type, context: list[str]) -> str | None:
    """How a base class is shown: a link, a public name, or ``None`` for plumbing."""
    if base is object or base.__name__ in ("Protocol", "Generic") or base.__name__[0] == "_":
        return None
    dotted = f"{base.__module__}.{base.__qualname__}"
    if base.__module__.startswith("zerotrust"):
        if convert.index.resolve(dotted, []) is None:
            return None  # an internal base class
        return convert.link(base.__name__, dotted, context)
    if base.__module__ == "builtins":
        return f"`{base.__qualname__}`"
    return f"`{_public_path(base)}`"


def _public_path(cls: type) -> str:
    """``grpc.aio.Channel`` rather than ``grpc.aio._base_channel.Channel``: the shortest
    import path without a private part that reaches ``cls``."""
    parts = cls.__module__.split(".")
    for end in range(1, len(parts) + 1):
        prefix = parts[:end]
        if any(part.startswith("_") for part in prefix):
            break
        module = sys.modules.get(".".join(prefix))
        if module is not None and getattr(module, cls.__name__, None) is cls:
            return f"{'.'.join(prefix)}.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _class_body(convert: Converter, qualified: str, cls: type, context: list[str]) -> list[str]:
    out: list[str] = []
    if issubclass(cls, enum.Enum):
        out += ["", "| member | value |", "|---|---|"]
        out += [f"| `{m.name}` | `{m.value!r}` |" for m in cls]
        constants = []
    elif issubclass(cls, BaseException) and all(hasattr(cls, k) for k in _ERROR_FIELDS):
        # an error: what callers and logs see, inherited values included
        constants = [(k, getattr(cls, k)) for k in _ERROR_FIELDS]
    else:
        constants = [  # class constants (frameworks set lower-case attributes at run time)
            (k, v)
            for k, v in vars(cls).items()
            if k.isupper() and isinstance(v, (str, int, float, bool))
        ]
    if constants:
        out += ["", "| attribute | value |", "|---|---|"]
        out += [f"| `{k}` | `{v!r}` |" for k, v in constants]
    for member, value in _own_members(cls):
        out += ["", *_render_member(convert, qualified, member, value, context)]
    return out


def _render_member(
    convert: Converter, qualified: str, member: str, value: Any, context: list[str]
) -> list[str]:
    anchor = f"{qualified}.{member}"
    owner = qualified.rsplit(".", 1)[-1]
    out = [_anchor_heading(3, f"`{owner}.{member}`", anchor), ""]
    if isinstance(value, (property, functools.cached_property)):
        fget = value.fget if isinstance(value, property) else value.func
        signature = _signature(fget)
        returns = _returns(signature) if signature else None
        line = f"{member}: {returns}" if returns else member
        out += _code_block([f"property {line}"], "py")
        doc = value.__doc__ if isinstance(value, property) else fget.__doc__
    else:
        func = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
        signature = _signature(func)
        skip = not isinstance(value, staticmethod)
        params = _parameters(signature, skip_first=skip) if signature else ["..."]
        returns = _returns(signature) if signature else None
        prefix = "async def" if inspect.iscoroutinefunction(func) else "def"
        if isinstance(value, classmethod):
            prefix = f"classmethod {prefix}"
        elif isinstance(value, staticmethod):
            prefix = f"staticmethod {prefix}"
        out += _code_block(
            _signature_line(f"{prefix} {member}", params, returns).splitlines(), "py"
        )
        doc = func.__doc__
    if not (doc or "").strip():
        UNDOCUMENTED.append(anchor)
    out += ["", *convert.block(doc, context)]
    return out


def render_all() -> dict[Path, str]:
    UNDOCUMENTED.clear()
    index = build_index()
    comments = _source_comments()
    pages = {OUT / f"{page}.md": render_page(page, about, index, comments) for page, about in PAGES}
    toc = [
        "# API reference",
        "",
        "Every public name, by module. Generated from the docstrings.",
        "",
    ]
    toc += [f"* [`{page}`]({page}.md) -- {about}" for page, about in PAGES]
    pages[OUT / "index.md"] = "\n".join(toc) + "\n"
    return pages


def main(argv: list[str]) -> int:
    pages = render_all()
    if "--check" in argv:
        stale = [
            str(path.relative_to(ROOT))
            for path, text in pages.items()
            if not path.exists() or path.read_text(encoding="utf-8") != text
        ]
        if UNDOCUMENTED:
            print("public names without a docstring:", *UNDOCUMENTED)
        extra = (
            [str(p.relative_to(ROOT)) for p in OUT.glob("*.md") if p not in pages]
            if OUT.exists()
            else []
        )
        if stale or extra:
            print("out of date (run python docs/gen_api.py):", *stale, *extra)
        return 1 if stale or extra or UNDOCUMENTED else 0
    OUT.mkdir(exist_ok=True)
    for old in OUT.glob("*.md"):
        if old not in pages:
            old.unlink()
    for path, text in pages.items():
        path.write_text(text, encoding="utf-8")
    print(f"wrote {len(pages)} pages to {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

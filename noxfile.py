"""Developer tasks: ``nox -s tests``, ``lint``, ``typecheck``, ``demo``, ``bench``, ``load``, ``fuzz``,
``docs``, ``lowest``, ``pythons``."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "typecheck", "tests"]

DEV = ".[dev]"
HTTPX2_SUITES = [
    "tests/client",
    "tests/sources/test_jwks_http.py",
    "tests/sources/test_oauth2.py",
    "tests/sources/test_url_rules.py",
]


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite (real TLS handshakes and servers on loopback)."""
    session.install("-e", DEV)
    session.run(
        "python",
        "-m",
        "pytest",
        "--cov=zerotrust",
        "--cov-report=term:skip-covered",
        *session.posargs,
    )
    if not session.posargs:
        # The outgoing-call suites once more with ``import httpx`` resolving to httpx2, as
        # ``httpx2.alias_httpx()`` makes it in an application that moved to httpx2.
        session.run("python", "-m", "pytest", "-q", "-p", "tests._httpx2_alias", *HTTPX2_SUITES)


@nox.session(python=["3.10", "3.11", "3.12", "3.13"])
def pythons(session: nox.Session) -> None:
    """The whole test suite on each supported Python (one: ``nox -s pythons-3.13``).

    Not a default session: a machine rarely has all four interpreters."""
    session.install("-e", DEV)
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session(venv_backend="uv")
def lowest(session: nox.Session) -> None:
    """The test suite against the oldest release of every dependency that pyproject.toml
    allows (uv's ``lowest-direct`` resolution): the declared lower bounds are tested bounds.

    Twice: with every extra, then without ``spiffe`` (whose releases need newer ``grpcio``
    and ``cryptography`` than zerotrust does) at zerotrust's own floors of those two."""
    # setuptools: the oldest OpenTelemetry instrumentations still import pkg_resources
    session.install("--resolution=lowest-direct", "-e", DEV, "setuptools>=70,<81")
    # old releases warn about their own dependencies' deprecations: not this suite's concern
    pytest = (
        "python",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:randomly",
        "-W",
        "ignore::DeprecationWarning",
    )
    session.run(*pytest, *session.posargs)
    floors = _floors("cryptography", "grpcio")
    venv = {"VIRTUAL_ENV": session.virtualenv.location}
    session.run("uv", "pip", "uninstall", "spiffe", external=True, env=venv)
    session.install(*(f"{name}=={version}" for name, version in floors.items()))
    without_spiffe = ("--ignore=tests/sources/workload_api", "-k", "not spire and not workload_api")
    # old grpcio releases log their start-up at INFO on stderr, which the examples' tests refuse
    session.run(*pytest, *without_spiffe, *session.posargs, env={"GRPC_VERBOSITY": "ERROR"})


def _floors(*names: str) -> dict[str, str]:
    """The lower bounds pyproject.toml declares for ``names`` (in any extra or the core)."""
    import re

    import tomllib

    with open("pyproject.toml", "rb") as fh:
        project = tomllib.load(fh)["project"]
    requirements = [*project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        requirements += extra
    floors: dict[str, str] = {}
    for requirement in requirements:
        found = re.fullmatch(
            r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?>=([0-9][0-9.]*)(?:,\s*!=[0-9][0-9.*]*)*", requirement
        )
        if found and found.group(1).lower() in names:
            floors[found.group(1).lower()] = found.group(2)
    return floors


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.6")
    paths = ("src", "tests", "examples", "benchmarks", "fuzz", "docs/gen_api.py", "noxfile.py")
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the library."""
    session.install("-e", DEV)
    session.run("mypy", "--strict", "src/zerotrust")


@nox.session
def demo(session: nox.Session) -> None:
    """Services calling each other over mTLS, allowed and denied calls, the audit trail."""
    session.install("-e", ".[demo]")
    session.run("python", "examples/demo.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks, reported as ratios against baselines measured in the same run; the tables
    are written to docs/performance.md (``nox -s bench -- --quick`` for short runs)."""
    session.install("-e", DEV, "pyjwt[crypto]", "joserfc")
    session.run("python", "benchmarks/run_all.py", *session.posargs)


FUZZ_TARGETS = [
    "token",
    "token_text",
    "spiffe_id",
    "xfcc",
    "client_cert",
    "nginx",
    "jwks",
    "bundle",
    "policy",
]


@nox.session
def fuzz(session: nox.Session) -> None:
    """Coverage-guided fuzzing (atheris) of every parser of hostile input; not in the default suite.

    ``nox -s fuzz -- 200000`` sets the iterations per target (default 50,000).
    """
    session.install("-e", ".", "atheris")
    runs = session.posargs[0] if session.posargs else "50000"
    for target in FUZZ_TARGETS:
        session.run(
            "python",
            "fuzz/fuzz_parsers.py",
            target,
            f"-runs={runs}",
            "-rss_limit_mb=1024",
            "-timeout=10",
        )


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site with ``mkdocs --strict`` and run every snippet in it."""
    session.install("-e", DEV, "mkdocs-material>=9.5")
    session.run(
        "mkdocs", "build", "--strict", "--site-dir", "site", env={"NO_MKDOCS_2_WARNING": "1"}
    )
    session.run("python", "-m", "pytest", "tests/test_docs.py", "-q", *session.posargs)


@nox.session
def load(session: nox.Session) -> None:
    """Load test of the FastAPI and grpc apps with zerotrust (mTLS + tokens) and bare (plain
    TLS): requests/s, p50/p99 latency, errors (must be 0) and server peak RSS in one table.

    ``nox -s load -- --duration 30`` sets the seconds per run (default 10).
    """
    session.install("-e", ".[fastapi,httpx,grpc]", "uvicorn[standard]>=0.47")
    session.run("python", "benchmarks/load.py", *session.posargs)

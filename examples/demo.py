"""The zerotrust demo: three services and two clients in one process (``zerotrust demo``)."""

from zerotrust.demo import run

raise SystemExit(run())

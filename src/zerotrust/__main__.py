"""``python -m zerotrust``: the zerotrust command line."""

from zerotrust.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

"""Run every benchmark in this folder and write their tables into docs/performance.md.

    python benchmarks/run_all.py [--quick]

Each ``bench_*.py`` prints its own table of ratios against a baseline measured in the same run.
This script runs them one after the other (never in parallel: they pin processes to CPUs),
echoes their output, and replaces the block between the ``bench-table`` markers of
docs/performance.md with the outputs, the date and the machine's description.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAGE = HERE.parent / "docs" / "performance.md"
QUICK = {
    "bench_asgi.py": ["--duration", "3", "--rounds", "1"],
    "bench_flask.py": ["--duration", "3", "--rounds", "1"],
    "bench_django.py": ["--duration", "3", "--rounds", "1"],
    "bench_grpc.py": ["--requests", "10000", "--rounds", "1"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short runs (noisier)")
    parser.add_argument("--no-write", action="store_true", help="do not update the docs page")
    args, extra = parser.parse_known_args()
    sections = []
    for script in sorted(HERE.glob("bench_*.py")):
        argv = [
            sys.executable,
            str(script),
            *(QUICK.get(script.name, []) if args.quick else []),
            *extra,
        ]
        print(f"\n### {script.name}\n", flush=True)
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=1800)
        output = result.stdout.rstrip()
        print(output, flush=True)
        if result.returncode != 0:
            print(result.stderr[-2000:], file=sys.stderr)
            output += f"\n(exited with {result.returncode})"
        sections.append(f"### `{script.name}`\n\n```text\n{output}\n```\n")
    if not args.no_write:
        cpu = platform.processor() or platform.machine()
        header = (
            f"Measured {dt.date.today().isoformat()} on {platform.system()} {cpu}, "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
            f"{' (quick runs)' if args.quick else ''}.\n\n"
        )
        text = PAGE.read_text(encoding="utf-8")
        block = "<!-- bench-table -->\n" + header + "\n".join(sections) + "<!-- /bench-table -->"
        text = re.sub(
            r"<!-- bench-table -->.*<!-- /bench-table -->", lambda _: block, text, flags=re.S
        )
        PAGE.write_text(text, encoding="utf-8")
        print(f"\nwrote {PAGE.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

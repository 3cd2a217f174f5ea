"""Summaries of py-spy's collapsed stacks (``--format raw``, written next to
each flame graph by ``python -m bench --profile SERVICE``): where a
service's event-loop thread spends its samples, by own time (leaf frame)
and by inclusive time, so PROFILES.md can quote numbers rather than shapes.

    .venv/bin/python -m bench.profiles bench/results/full/profiles/hot_path-decision.txt
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# The thread running the service's event loop: its stacks pass through here.
MAIN_MARKER = "run_service (runtime/service.py"
_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


@dataclass
class Summary:
    samples: int = 0  # all threads
    main: int = 0  # the event-loop thread
    own: Counter[str] = field(default_factory=Counter)  # leaf function -> samples (main thread)
    inclusive: Counter[str] = field(default_factory=Counter)  # function -> samples it is on the stack


def _function(frame: str) -> str:
    """`func (file:line)` without the line number, so one function is one key."""
    m = _FRAME.match(frame.strip())
    return f"{m['func']} ({m['file']})" if m else frame.strip()


def summarize(text: str) -> Summary:
    out = Summary()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        out.samples += n
        if MAIN_MARKER not in stack:
            continue
        out.main += n
        frames = [_function(f) for f in stack.split(";")]
        out.own[frames[-1]] += n
        for func in set(frames):
            out.inclusive[func] += n
    return out


def render(summary: Summary, top: int = 25) -> str:
    main = summary.main or 1
    lines = [f"{summary.main} samples on the event-loop thread ({summary.samples} in all threads)", ""]
    lines.append("own time (leaf frame), share of the event-loop thread's samples:")
    lines += [f"  {100 * n / main:5.1f}%  {f}" for f, n in summary.own.most_common(top)]
    lines.append("")
    lines.append("inclusive time:")
    lines += [f"  {100 * n / main:5.1f}%  {f}" for f, n in summary.inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profiles", description=__doc__)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    for path in args.files:
        print(f"== {path}")
        print(render(summarize(path.read_text(encoding="utf-8")), args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

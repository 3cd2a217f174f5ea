"""Progress of the long CLI commands (`./dev bench`, `tradingctl audit
replay|verify`): drawn on stderr when it is a terminal, absent otherwise, and
the commands' own lines still come through."""

from __future__ import annotations

import asyncio
import io
from contextlib import redirect_stderr

from bench.progress import say, steps
from tools.audit import elapsed

# (Redirected inside each test: pytest's capturing resets sys.stderr between
# a fixture's set-up and the test's call.)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bench_bar_on_a_terminal() -> None:
    terminal = _Terminal()
    with redirect_stderr(terminal), steps(4, "bench quick") as bar:
        bar.set_postfix_str("floors")
        bar.update()
        say("bench: floors")
    out = terminal.getvalue()
    assert "bench quick" in out and "1/4" in out and "floors" in out
    assert "bench: floors\n" in out


def test_bench_without_a_terminal_prints_only_its_lines() -> None:
    redirected = io.StringIO()
    with redirect_stderr(redirected), steps(4, "bench quick") as bar:
        assert bar.disable
        bar.update()
        say("bench: floors")
    assert redirected.getvalue() == "bench: floors\n"


async def test_audit_shows_the_time_elapsed_on_a_terminal() -> None:
    terminal = _Terminal()
    with redirect_stderr(terminal):
        async with elapsed("replaying tenant acme", tick_s=0.01):
            await asyncio.sleep(0.05)
    out = terminal.getvalue()
    assert "replaying tenant acme: 00:00" in out
    assert out.count("replaying tenant acme") >= 2  # redrawn while the call runs


async def test_audit_without_a_terminal_shows_nothing() -> None:
    redirected = io.StringIO()
    with redirect_stderr(redirected):
        async with elapsed("replaying tenant acme", tick_s=0.01):
            await asyncio.sleep(0.03)
    assert redirected.getvalue() == ""

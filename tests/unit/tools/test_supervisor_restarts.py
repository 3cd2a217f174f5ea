"""The supervisor's restart policy (pure) and its restarts of real tiny child
processes (``python -c``), without the platform."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from structlog.testing import capture_logs

from tools.supervisor import RestartPolicy, ServiceProcess, Supervisor, spawn

POLICY = RestartPolicy(initial_s=0.5, max_s=30.0, factor=2.0, stable_after_s=60.0)


def test_backoff_doubles_from_half_a_second_up_to_thirty() -> None:
    delays: list[float] = []
    previous: float | None = None
    for _ in range(9):
        previous = POLICY.next_delay(previous, uptime_s=1.0)
        delays.append(previous)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_an_instance_that_stayed_up_resets_the_backoff() -> None:
    assert POLICY.next_delay(30.0, uptime_s=59.9) == 30.0
    assert POLICY.next_delay(30.0, uptime_s=60.0) == 0.5


def spawner(script: str, counter: Path) -> Callable[[str], Awaitable[ServiceProcess]]:
    """Children running `script`; each start appends a line to `counter`."""

    def start(name: str) -> Awaitable[ServiceProcess]:
        with counter.open("a") as f:
            f.write(name + "\n")
        return spawn(name, [sys.executable, "-c", script], {}, "36", 8)

    return start


def starts(counter: Path) -> list[str]:
    return counter.read_text().split()


async def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_crashed_service_is_restarted_alone_with_backoff(tmp_path: Path) -> None:
    counter = tmp_path / "starts"
    # "crasher" exits (code 3) 0.1 s after each start; "steady" runs until stopped.
    crasher = spawner("import time, sys; time.sleep(0.1); sys.exit(3)", counter)
    steady = spawner("import time; time.sleep(600)", counter)

    def start(name: str) -> Awaitable[ServiceProcess]:
        return crasher(name) if name == "crasher" else steady(name)

    procs = [await start("crasher"), await start("steady")]
    steady_pid = procs[1].process.pid
    policy = RestartPolicy(initial_s=0.2, max_s=0.4, factor=2.0, stable_after_s=60.0)
    supervisor = Supervisor(start, procs, policy)
    began = time.monotonic()
    with capture_logs() as logs:
        supervisor.watch()
        try:
            await wait_for(lambda: supervisor.restarts["crasher"] >= 4, 20)
        finally:
            await supervisor.stop(grace=5)
    elapsed = time.monotonic() - began
    # Backoff 0.2, 0.4, 0.4 (capped) between runs of ~0.1 s each: at least ~1.3 s for 4 restarts.
    assert elapsed >= 0.2 + 0.4 + 0.4 + 4 * 0.1
    assert supervisor.restarts["steady"] == 0
    assert supervisor.procs["steady"].process.pid == steady_pid  # never touched
    exits = [e for e in logs if e["event"] == "service_exited"]
    assert [e["restart_in_s"] for e in exits[:4]] == [0.2, 0.4, 0.4, 0.4]
    assert {e["service"] for e in exits} == {"crasher"}
    assert all(e["exit_code"] == 3 and e["log_level"] == "warning" for e in exits)
    restarted = [e for e in logs if e["event"] == "service_restarted"]
    assert [e["restarts_total"] for e in restarted] == list(range(1, supervisor.restarts["crasher"] + 1))
    assert starts(counter).count("crasher") == 1 + supervisor.restarts["crasher"]
    # Stopped means stopped: every child has exited and nothing is started any more.
    assert all(sp.process.returncode is not None for sp in supervisor.procs.values())
    before = starts(counter)
    await asyncio.sleep(0.6)
    assert starts(counter) == before


async def test_stop_ends_every_child_and_a_pending_restart(tmp_path: Path) -> None:
    counter = tmp_path / "starts"
    start = spawner("import time; time.sleep(600)", counter)
    procs = [await start("a"), await start("b")]
    supervisor = Supervisor(start, procs, RestartPolicy(initial_s=5.0))
    supervisor.watch()
    procs[0].process.kill()  # crash: a restart is now pending for 5 s
    await wait_for(lambda: procs[0].process.returncode is not None, 10)
    await asyncio.sleep(0.1)  # the supervisor saw the exit and waits out its backoff
    began = time.monotonic()
    await supervisor.stop(grace=5)
    assert time.monotonic() - began < 3  # did not wait out the backoff
    assert procs[1].process.returncode is not None  # SIGTERM reached the healthy one
    assert starts(counter) == ["a", "b"]  # and the crashed one was not started again
    assert supervisor.restarts["a"] == 0


REPO = Path(__file__).resolve().parents[3]

# A supervisor of two sleeping children, as `./dev run` wires it (signals
# set the stop event); prints each child's pid as it starts, "stopped" at the end.
SUPERVISOR_PROGRAM = """
import asyncio, sys
from tools.supervisor import RestartPolicy, Supervisor, spawn, stop_on_signals

async def main() -> None:
    async def start(name):
        sp = await spawn(name, [sys.executable, "-c", "import time; time.sleep(600)"], {}, "36", 4)
        print("started", name, sp.process.pid, flush=True)
        return sp
    stop = asyncio.Event()
    stop_on_signals(stop)
    supervisor = Supervisor(start, [await start("a"), await start("b")], RestartPolicy(initial_s=0.1))
    supervisor.watch()
    await stop.wait()
    await supervisor.stop(grace=5)
    print("stopped", dict(supervisor.restarts), flush=True)

asyncio.run(main())
"""


async def test_sigterm_stops_the_supervisor_and_every_child_after_a_restart() -> None:
    import os
    import signal

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SUPERVISOR_PROGRAM, cwd=REPO, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    stdout: asyncio.StreamReader = proc.stdout
    lines: list[str] = []

    async def line() -> str:
        """The next line the program printed (structlog's lines go to stdout too: kept, skipped)."""
        while True:
            raw: bytes = await asyncio.wait_for(stdout.readline(), 30)
            text = raw.decode().strip()
            lines.append(text)
            if text.startswith(("started ", "stopped ")) or not text:
                return text

    try:
        first = {(await line()).split()[1]: int(lines[-1].split()[2]) for _ in range(2)}
        os.kill(first["a"], signal.SIGKILL)  # a crash after start-up
        restarted = await line()
        assert restarted.startswith("started a ") and int(restarted.split()[2]) != first["a"]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert (await line()) == "stopped {'a': 1}"
        assert any("service_exited" in t and "service=a" in t for t in lines), lines
        assert any("service_restarted" in t and "restarts_total=1" in t for t in lines), lines
        children = [first["b"], int(restarted.split()[2])]
        for pid in children:  # both gone (reaped by the supervisor)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            raise AssertionError(f"child {pid} still running: {lines}")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

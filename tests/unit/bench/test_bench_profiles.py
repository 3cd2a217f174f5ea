"""bench.profiles: own and inclusive time of the event-loop thread from py-spy's collapsed stacks."""

from __future__ import annotations

from bench.profiles import render, summarize

MAIN = "thread (0x1);<module> (services/x/__main__.py:4);run_service (runtime/service.py:179)"
RAW = "\n".join(
    [
        f"{MAIN};handle (services/x/api.py:10);encode (lib/pb.py:5) 30",
        f"{MAIN};handle (services/x/api.py:12) 10",
        f"{MAIN};poll (lib/loop.py:3) 60",
        "thread (0x2);_worker (concurrent/futures/thread.py:81) 100",
        "garbage line",
    ]
)


def test_event_loop_thread_time_by_leaf_and_by_function() -> None:
    s = summarize(RAW)
    assert (s.samples, s.main) == (200, 100)
    assert s.own["encode (lib/pb.py)"] == 30 and s.own["handle (services/x/api.py)"] == 10
    assert s.inclusive["handle (services/x/api.py)"] == 40  # both lines of one function
    text = render(s, top=3)
    assert "100 samples on the event-loop thread (200 in all threads)" in text
    assert " 60.0%  poll (lib/loop.py)" in text

"""Finding the process behind a server a test started indirectly (a service
the supervisor spawned), to kill it as a crash would."""

from __future__ import annotations

import psutil


def pid_listening_on(address: str) -> int:
    """The process listening on `address` ("host:port"). By port, not by
    command line: several platforms (module fixtures, the test's own) may run
    the same service module side by side."""
    port = int(address.rsplit(":", 1)[1])
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            return int(conn.pid)
    raise AssertionError(f"nothing listens on {address}")

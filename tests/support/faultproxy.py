"""A loopback TCP forwarder that fault tests put between a process and a real
server, to hold its traffic and cut its connections at a chosen moment
(what toxiproxy does, in a few lines).

It forwards bytes unchanged to the real server; it is never a stand-in for
one. ``hold()`` stops forwarding in both directions (what arrives meanwhile
is read and kept in the proxy, where a test can look at it), ``release()``
forwards again, ``cut()`` closes every current connection and drops whatever
was held, so bytes a killed process sent while held never reach the server.
``on_forward`` sees each client-to-server chunk just before it is forwarded
(e.g. to hold another proxy at that instant).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

_CHUNK = 65536


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    cut: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def close(self) -> None:
        self.cut = True
        for writer in (self.client, self.server):
            with contextlib.suppress(Exception):
                writer.transport.abort()  # RST: drop anything unsent


class FaultProxy:
    """Forwards 127.0.0.1:<port> to ``upstream_host:upstream_port``."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        port: int = 0,
        on_forward: Callable[[bytes], None] | None = None,
    ) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._port = port
        self.on_forward = on_forward
        self._open = asyncio.Event()
        self._open.set()
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None
        # Client-to-server chunks read while held (not forwarded yet), for assertions.
        self.held_chunks: list[bytes] = []

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def held(self) -> bool:
        return not self._open.is_set()

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._port)
        return self

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self.held_chunks.clear()
        self._open.set()

    def cut(self) -> None:
        """Close every current connection; anything held is dropped, never forwarded."""
        for link in list(self._links):
            link.close()
        self._links.clear()
        self.held_chunks.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self._upstream)
        except OSError:
            client_w.transport.abort()
            return
        link = _Link(client_w, server_w)
        self._links.add(link)
        link.tasks = [
            asyncio.create_task(self._pipe(client_r, server_w, link, to_server=True)),
            asyncio.create_task(self._pipe(server_r, client_w, link, to_server=False)),
        ]

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, link: _Link, *, to_server: bool
    ) -> None:
        try:
            while not link.cut:
                data = await src.read(_CHUNK)
                if not data:
                    break
                if not self._open.is_set():
                    if to_server:
                        self.held_chunks.append(data)
                    await self._open.wait()
                if link.cut:
                    return  # cut while held: the bytes are dropped
                if to_server and self.on_forward is not None:
                    self.on_forward(data)
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            link.close()
            self._links.discard(link)


def kafka_api_key(chunk: bytes) -> int | None:
    """The API key of the Kafka request a chunk starts with (0 = Produce,
    3 = Metadata), or None for a chunk too short to tell; requests are a
    4-byte size then an int16 API key."""
    if len(chunk) < 6:
        return None
    return int.from_bytes(chunk[4:6], "big", signed=True)

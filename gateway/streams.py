"""Server-streaming RPCs as server-sent events (text/event-stream).

A reader task pulls the gRPC stream into a bounded queue; the response
drains the queue, sending each message as one ``data:`` event (proto3 JSON),
a ``: heartbeat`` comment when nothing arrived for
``stream_heartbeat_s`` (keeps proxies and clients from timing out), an
``event: error`` carrying problem+json if the stream fails midway, and an
``event: end`` when the service ends it.

Event ids and resuming. A stream is *resumable* when its request has a
``resume_after_sequence`` field and its response a ``stream_sequence`` field
(StreamOrderUpdates: the position in the service's durable JetStream
stream). Its events carry ``id: <stream_sequence>`` (snapshots, position 0,
carry none), increasing along the tenant's stream across connections, and a
reconnect's ``Last-Event-ID`` header becomes ``resume_after_sequence``: the
service replays exactly the updates after it, then continues live. The
tenant is the caller's, checked by the service, so an id can only resume the
caller's own stream. A ``Last-Event-ID`` that is not a decimal position is a
400 problem (field ``Last-Event-ID``); a position the service no longer keeps
or never issued is its 400 (OUT_OF_RANGE): resuming from live instead would
silently lose updates, and a client that cannot resume must know to reload
its state. Live-only streams (quotes, portfolio, notifications) send no
ids: ids that restart at every connection would let a client believe it
resumed when it did not; they ignore ``Last-Event-ID`` and start live (each
starts with a snapshot of the current state).

Errors before the first message (bad input, missing scope at the service,
unimplemented) are answered as ordinary problem+json responses: the gateway
waits briefly for the first item before committing to a 200.

Teardown: when the client goes away Starlette cancels the response, whose
``finally`` cancels the gRPC call (the service sees CANCELLED and stops);
when the service ends or fails, the response ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.dispatch import Dispatcher, Prepared
from gateway.handling import correlation_id
from gateway.problems import Problem, bad_request, from_rpc_error, violation
from gateway.transcode import to_json
from runtime.context import reset_context, set_context

# How long to wait for the first message (or an immediate error) before
# answering 200 and streaming: errors of a bad request arrive well within it.
FIRST_ITEM_WAIT_S = 1.0
_END = object()
# The fields that make a stream resumable (see the module docstring).
RESUME_FIELD = "resume_after_sequence"
SEQUENCE_FIELD = "stream_sequence"
LAST_EVENT_ID = "Last-Event-ID"
_MAX_POSITION = 2**64 - 1  # JetStream sequences are uint64


def resumable(request: Any, response_type: Any) -> bool:
    """True when a stream's messages carry a resumable position (by the field convention)."""
    return (
        RESUME_FIELD in request.DESCRIPTOR.fields_by_name
        and SEQUENCE_FIELD in response_type.DESCRIPTOR.fields_by_name
    )


def resume_position(header: str) -> int:
    """The position a ``Last-Event-ID`` names, or a 400 problem."""
    value = header.strip()
    if not (value.isascii() and value.isdigit()) or int(value) > _MAX_POSITION:
        raise bad_request(
            "Last-Event-ID must be the id of an event of this stream (a decimal position)",
            [
                violation(
                    LAST_EVENT_ID,
                    f"{value[:40]!r} is not a stream position",
                    "INVALID_LAST_EVENT_ID",
                    pointer="",
                )
            ],
        )
    return int(value)


async def _pump(call: Any, queue: asyncio.Queue[Any]) -> None:
    try:
        async for reply in call:
            await queue.put(reply)
        await queue.put(_END)
    except grpc.aio.AioRpcError as err:
        if err.code() is not grpc.StatusCode.CANCELLED:
            await queue.put(from_rpc_error(err))
        else:
            await queue.put(_END)
    except asyncio.CancelledError:
        raise


def _event(data: str, *, event: str = "", event_id: int | None = None) -> bytes:
    lines = []
    if event:
        lines.append(f"event: {event}")
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return ("\n".join(lines) + "\n\n").encode()


async def sse(dispatcher: Dispatcher, prepared: Prepared, request: Request, cid: str) -> Response:
    """Open the stream and answer with server-sent events (or a problem)."""
    with_ids = resumable(prepared.request, prepared.route.response_class)
    last_event_id = request.headers.get(LAST_EVENT_ID)
    if with_ids and last_event_id is not None:
        setattr(prepared.request, RESUME_FIELD, resume_position(last_event_id))
    call_stream = dispatcher.callable_for(prepared.route)
    token = set_context(prepared.context)
    try:
        call = call_stream(prepared.request, timeout=prepared.timeout, metadata=prepared.metadata)
    finally:
        reset_context(token)
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=256)
    reader = asyncio.create_task(_pump(call, queue))
    first: Any = None
    try:
        first = await asyncio.wait_for(queue.get(), FIRST_ITEM_WAIT_S)
    except TimeoutError:
        first = None
    except BaseException:
        call.cancel()
        reader.cancel()
        raise
    if isinstance(first, Problem):
        reader.cancel()
        raise first
    route = prepared.route
    heartbeat = dispatcher.options.stream_heartbeat_s

    async def events() -> AsyncIterator[bytes]:
        pending = first
        try:
            yield b": stream open\n\n"
            while True:
                item = pending
                pending = None
                if item is None:
                    try:
                        item = await asyncio.wait_for(queue.get(), heartbeat)
                    except TimeoutError:
                        yield b": heartbeat\n\n"
                        continue
                if item is _END:
                    yield _event("{}", event="end")
                    return
                if isinstance(item, Problem):
                    yield _event(json.dumps(item.body(cid), separators=(",", ":")), event="error")
                    return
                doc = to_json(route.response_message(item))
                position = getattr(item, SEQUENCE_FIELD, 0) if with_ids else 0
                yield _event(json.dumps(doc, separators=(",", ":")), event_id=position or None)
        finally:
            call.cancel()
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# ---- WebSocket -------------------------------------------------------------------------------

# Close codes (RFC 6455): 1000 normal (the service ended the stream), 1008
# policy violation (401/403/400 before the stream opened), 1011 server error,
# 1013 try again later (503/429).
_CLOSE_CODES = {401: 1008, 403: 1008, 404: 1008, 400: 1008, 429: 1013, 503: 1013, 501: 1008}


async def websocket_stream(dispatcher: Dispatcher, websocket: WebSocket) -> None:
    """The same streams over WebSocket: one text frame per message (proto3
    JSON), ``{"heartbeat": true}`` frames when idle, a problem+json frame then
    a close on errors. Either side going away ends the gRPC call."""
    cid = correlation_id(websocket.headers)
    try:
        prepared = await dispatcher.prepare(websocket, cid, method="GET")
        if not prepared.route.streaming:
            raise Problem(
                grpc.StatusCode.INVALID_ARGUMENT, "only streaming routes speak WebSocket", status=400
            )
    except Problem as problem:
        await websocket.accept()
        await websocket.send_text(json.dumps(problem.body(cid), separators=(",", ":")))
        await websocket.close(_CLOSE_CODES.get(problem.http_status, 1011))
        return
    await websocket.accept(headers=[(b"x-correlation-id", cid.encode())])
    call_stream = dispatcher.callable_for(prepared.route)
    token = set_context(prepared.context)
    try:
        call = call_stream(prepared.request, timeout=prepared.timeout, metadata=prepared.metadata)
    finally:
        reset_context(token)
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=256)
    reader = asyncio.create_task(_pump(call, queue))

    async def client_gone() -> None:
        # Frames from the client are ignored; a disconnect ends the stream.
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await websocket.receive_text()

    watcher = asyncio.create_task(client_gone())
    heartbeat = dispatcher.options.stream_heartbeat_s
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait(
                {getter, watcher}, timeout=heartbeat, return_when=asyncio.FIRST_COMPLETED
            )
            if watcher in done:
                getter.cancel()
                return
            if getter not in done:
                getter.cancel()
                await websocket.send_text('{"heartbeat":true}')
                continue
            item = getter.result()
            if item is _END:
                await websocket.close(1000)
                return
            if isinstance(item, Problem):
                await websocket.send_text(json.dumps(item.body(cid), separators=(",", ":")))
                await websocket.close(_CLOSE_CODES.get(item.http_status, 1011))
                return
            doc = to_json(prepared.route.response_message(item))
            await websocket.send_text(json.dumps(doc, separators=(",", ":")))
    except WebSocketDisconnect:
        return
    finally:
        call.cancel()
        reader.cancel()
        watcher.cancel()
        with contextlib.suppress(BaseException):
            await reader

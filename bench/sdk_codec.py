"""Codec cost of the two candidate Python client SDKs, measured side by side:
the upb-backed protobuf classes the services use (gen/python, package
`trading-contracts`) and betterproto2 dataclasses generated from the same
proto/ (the SDK the repository shipped before clients/python; see
clients/python/DECISION.md for the numbers and the decision).

    .venv/bin/python -m bench.sdk_codec            # ~30 s on a quiet machine
    .venv/bin/python -m bench.sdk_codec --quick    # fewer samples

For each message (a PlaceOrderRequest, a ListOrdersResponse of 100 filled
orders) it reports the median (p50) time of one serialize and one parse in
microseconds, and for each package the median import time in a fresh
interpreter (the execution module alone and every service module).

The betterproto2 classes are generated on the fly into a scratch directory
with buf and the betterproto2 plugin (same options as the removed
`gen/sdk`), so the comparison is always against today's proto/. When the
plugin is not installed (it is no longer a dependency) that column is skipped;
install it to reproduce the comparison:
`.venv/bin/pip install betterproto2-compiler==0.10.1 'betterproto2[grpcio,grpclib]==0.10.0'`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trading.common.v1 import decimal_pb2, market_pb2
from trading.common.v1 import types_pb2 as common_types_pb2
from trading.execution.v1 import execution_service_pb2, types_pb2

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PLUGIN = "protoc-gen-python_betterproto2"
# The scratch package the betterproto2 classes are generated into.
BP2_PACKAGE = "bp2_candidate"
ORDERS = 100


def place_order_request() -> execution_service_pb2.PlaceOrderRequest:
    """A limit buy with every field a client sets."""
    return execution_service_pb2.PlaceOrderRequest(
        client_order_id="bench-client-order-000001",
        symbol="BTC-USD",
        side=common_types_pb2.SIDE_BUY,
        type=market_pb2.ORDER_TYPE_LIMIT,
        time_in_force=types_pb2.TIME_IN_FORCE_GTC,
        quantity=decimal_pb2.Decimal(value="0.015"),
        limit_price=decimal_pb2.Decimal(value="64250.25"),
        strategy_id="btc-momentum",
    )


def list_orders_response(count: int = ORDERS) -> execution_service_pb2.ListOrdersResponse:
    """`count` filled orders with every field set, as a page of ListOrders."""
    reply = execution_service_pb2.ListOrdersResponse(next_page_token="eyJvZmZzZXQiOjEwMH0")
    for i in range(count):
        order = reply.orders.add(
            order_id=f"0b6f3c1e-8d1a-4c39-9a8e-{i:012d}",
            client_order_id=f"bench-{i:06d}",
            symbol="BTC-USD" if i % 2 else "ETH-USD",
            side=common_types_pb2.SIDE_BUY if i % 3 else common_types_pb2.SIDE_SELL,
            type=market_pb2.ORDER_TYPE_LIMIT,
            time_in_force=types_pb2.TIME_IN_FORCE_GTC,
            status=types_pb2.ORDER_STATUS_FILLED,
            strategy_id="btc-momentum",
            venue="paper",
            venue_order_id=f"paper-{i}",
            status_message="filled",
            version=3,
        )
        order.quantity.value = "0.015"
        order.limit_price.value = "64250.25"
        order.filled_quantity.value = "0.015"
        order.remaining_quantity.value = "0"
        order.average_fill_price.value = "64249.75"
        order.created_at.seconds, order.created_at.nanos = 1_760_000_000 + i, 125_000_000
        order.updated_at.seconds, order.updated_at.nanos = 1_760_000_001 + i, 250_000_000
    return reply


@dataclass(frozen=True)
class Codec:
    """How one library serializes and parses one message type."""

    serialize: Callable[[Any], bytes]
    parse: Callable[[bytes], Any]


def pb2_codec(cls: type[Any]) -> Codec:
    return Codec(serialize=lambda m: m.SerializeToString(), parse=cls.FromString)


def bp2_codec(cls: type[Any]) -> Codec:
    return Codec(serialize=bytes, parse=cls.parse)


def p50_us(fn: Callable[[], object], *, budget_s: float) -> float:
    """Median time of one call of `fn`, in microseconds. Calls are timed in
    batches long enough (>= 0.2 ms) that the clock's own cost does not count."""
    batch = 1
    while True:
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        if time.perf_counter() - start >= 2e-4:
            break
        batch *= 2
    samples: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(samples) < 15 or (time.perf_counter() < deadline and len(samples) < 2000):
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter() - start) / batch)
    return statistics.median(samples) * 1e6


def import_ms(statement: str, *, path: Path | None, runs: int) -> float:
    """Median wall time of `statement` in a fresh interpreter, in milliseconds
    (the interpreter's own start-up excluded)."""
    code = (
        "import sys, time\n"
        + (f"sys.path.insert(0, {str(path)!r})\n" if path else "")
        + "t = time.perf_counter()\n"
        + statement
        + "\nprint(time.perf_counter() - t)\n"
    )
    times = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        times.append(float(out.stdout.strip()) * 1e3)
    return statistics.median(times)


@contextmanager
def betterproto2_tree() -> Iterator[Path | None]:
    """betterproto2 classes of proto/ in a scratch directory (None when the plugin is missing)."""
    if shutil.which(PLUGIN, path=str(BIN)) is None:
        yield None
        return
    from tools import cli, protogen

    protogen.stage_third_party()
    with tempfile.TemporaryDirectory() as tmp:
        template = {
            "version": "v2",
            "inputs": [{"directory": str(ROOT), "exclude_paths": ["build/third_party/google"]}],
            "plugins": [
                {
                    "local": str(BIN / PLUGIN),
                    "out": str(Path(tmp) / BP2_PACKAGE),
                    "strategy": "all",
                    "opt": ["client_generation=sync_async"],
                }
            ],
        }
        if cli._buf("generate", "--template", json.dumps(template), quiet=True) != 0:
            raise RuntimeError("buf generate with the betterproto2 plugin failed")
        yield Path(tmp)


def read_all(message: Any) -> int:
    """Touch what a client reads (parsers may build Python objects lazily)."""
    if hasattr(message, "orders"):
        return sum(len(o.order_id) + len(o.average_fill_price.value) + o.version for o in message.orders)
    return len(message.client_order_id) + len(message.quantity.value)


def operations(codec: Codec, data: bytes) -> dict[str, Callable[[], object]]:
    parsed = codec.parse(data)
    return {
        "serialize": lambda: codec.serialize(parsed),
        "parse": lambda: codec.parse(data),
        "parse+read": lambda: read_all(codec.parse(data)),
    }


def codec_rows(bp2: Any, *, budget_s: float) -> list[tuple[str, str, str, float]]:
    messages = {
        "PlaceOrderRequest": place_order_request(),
        f"ListOrdersResponse({ORDERS})": list_orders_response(),
    }
    rows: list[tuple[str, str, str, float]] = []
    for label, message in messages.items():
        data = message.SerializeToString()
        codecs = {"protobuf (upb)": pb2_codec(type(message))}
        if bp2 is not None:
            codecs["betterproto2"] = bp2_codec(getattr(bp2, type(message).__name__))
            same = bytes(codecs["betterproto2"].parse(data)) == data
            print(f"{label}: {len(data)} bytes; betterproto2 re-encodes it byte for byte: {same}")
        for lib, codec in codecs.items():
            ops = operations(codec, data)
            rows += [(label, lib, op, p50_us(fn, budget_s=budget_s)) for op, fn in ops.items()]
    return rows


def import_rows(tree: Path | None, *, runs: int) -> list[tuple[str, str, float]]:
    services = sorted(p.parent.parent.name for p in (ROOT / "proto" / "trading").glob("*/v1/*_service.proto"))
    every = f"all {len(services)} service packages"
    pb2_one = "import trading.execution.v1.execution_service_pb2_grpc"
    pb2_all = "\n".join(f"import trading.{s}.v1.{s}_service_pb2_grpc" for s in services)
    rows = [
        ("protobuf (upb)", "execution", import_ms(pb2_one, path=None, runs=runs)),
        ("protobuf (upb)", every, import_ms(pb2_all, path=None, runs=runs)),
    ]
    if tree is not None:
        bp2_one = f"import {BP2_PACKAGE}.trading.execution.v1"
        bp2_all = "\n".join(f"import {BP2_PACKAGE}.trading.{s}.v1" for s in services)
        rows.append(("betterproto2", "execution", import_ms(bp2_one, path=tree, runs=runs)))
        rows.append(("betterproto2", every, import_ms(bp2_all, path=tree, runs=runs)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    args = parser.parse_args(argv)
    budget_s, runs = (0.3, 3) if args.quick else (2.0, 7)

    with betterproto2_tree() as tree:
        bp2: Any = None
        if tree is not None:
            sys.path.insert(0, str(tree))
            bp2 = importlib.import_module(f"{BP2_PACKAGE}.trading.execution.v1")
        rows = codec_rows(bp2, budget_s=budget_s)
        imports = import_rows(tree, runs=runs)

    print(f"\ncodec, p50 per call (Python {sys.version.split()[0]})")
    print(f"{'message':<24} {'library':<16} {'op':<11} {'p50 µs':>10}")
    for label, lib, op, us in rows:
        print(f"{label:<24} {lib:<16} {op:<11} {us:>10.2f}")
    if tree is None:
        print(f"(betterproto2 skipped: {PLUGIN} is not installed)")
    print("\nimport time, p50 in a fresh interpreter (grpc and the runtime library included)")
    print(f"{'library':<16} {'modules':<28} {'ms':>8}")
    for lib, what, ms in imports:
        print(f"{lib:<16} {what:<28} {ms:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

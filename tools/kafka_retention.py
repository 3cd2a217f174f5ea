"""Retention for the local Kafka broker's log: deletes the record batches that
every consumer group has read, once they are old enough.

Why this exists: tansu keeps every produced batch as an S3 object
(``clusters/<cluster>/topics/<topic>/partitions/<n>/records/<base offset>.batch``)
and never deletes one (its DeleteRecords is not implemented), and on each
fetch that finds new data it lists every stored object of the partition. A
fetch so costs more the older the partition is: with ~5,000 batches per
partition the audit and analytics sinks' fetches kept SeaweedFS at ~90% of a
core on an otherwise idle platform. Real Kafka deletes old segments itself
(retention.ms); this process is the local broker's stand-in, started beside
the SeaweedFS it sweeps (tools.infra.LocalInfra).

The rule is stricter than Kafka's time retention, so that no consumer loses a
record it has not read: a batch is deleted only when

1. it was written more than ``retention_s`` ago,
2. every consumer group that committed an offset on the partition has
   committed past the whole batch (the next batch's base offset is at or
   below the group's offset), and
3. it is not the partition's newest batch.

A partition no group has committed on (dead letters, which are read from
the beginning) is kept whole.

It talks to SeaweedFS's filer HTTP API (JSON listings, DELETE), the store
underneath the S3 gateway tansu uses: the S3 API would need request signing
and an S3 client dependency for three calls.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

import httpx

log = logging.getLogger("tools.kafka_retention")

_DIRECTORY_BIT = 1 << 31  # Go's os.ModeDir in a filer entry's Mode
_PAGE = 1000


@dataclass(frozen=True)
class Entry:
    """One entry of a filer directory listing."""

    name: str
    is_dir: bool
    mtime_s: float  # seconds since the epoch


@dataclass(frozen=True)
class StoredBatch:
    """One record batch object of a partition."""

    base_offset: int
    written_s: float  # seconds since the epoch
    name: str


def deletable(
    batches: Sequence[StoredBatch], committed: Sequence[int], *, now_s: float, retention_s: float
) -> list[StoredBatch]:
    """The batches of one partition that the rule in the module doc deletes.
    `committed`: every group's committed offset (the next offset it reads)."""
    if not committed or len(batches) < 2:
        return []
    floor = min(committed)
    ordered = sorted(batches, key=lambda b: b.base_offset)
    out: list[StoredBatch] = []
    for batch, following in itertools.pairwise(ordered):  # never the newest
        if following.base_offset > floor:
            break  # this batch (and every later one) holds records some group has not read
        if now_s - batch.written_s > retention_s:
            out.append(batch)
    return out


class Filer:
    """The few SeaweedFS filer calls the sweep needs."""

    def __init__(self, base_url: str, client: httpx.Client) -> None:
        self._base = base_url.rstrip("/")
        self._client = client

    def _url(self, path: str) -> str:
        return self._base + quote(path)

    def list(self, directory: str) -> Iterator[Entry]:
        """Every entry of `directory` (paged); nothing when it does not exist."""
        last = ""
        while True:
            reply = self._client.get(
                self._url(directory.rstrip("/") + "/"),
                params={"limit": _PAGE, "lastFileName": last},
                headers={"Accept": "application/json"},
            )
            if reply.status_code == 404:
                return
            reply.raise_for_status()
            page = reply.json()
            entries = page.get("Entries") or []
            for raw in entries:
                name = raw["FullPath"].rsplit("/", 1)[-1]
                mtime = datetime.fromisoformat(raw["Mtime"].replace("Z", "+00:00")).timestamp()
                yield Entry(name, bool(int(raw.get("Mode", 0)) & _DIRECTORY_BIT), mtime)
            if not page.get("ShouldDisplayLoadMore") or not entries:
                return
            last = page.get("LastFileName") or entries[-1]["FullPath"].rsplit("/", 1)[-1]

    def read_json(self, path: str) -> object | None:
        reply = self._client.get(self._url(path))
        if reply.status_code == 404:
            return None
        reply.raise_for_status()
        parsed: object = reply.json()
        return parsed

    def delete(self, path: str) -> None:
        reply = self._client.delete(self._url(path))
        if reply.status_code not in (200, 202, 204, 404):
            reply.raise_for_status()


@dataclass
class SweepResult:
    partitions: int = 0
    deleted: int = 0
    kept: int = 0


def _committed_offsets(filer: Filer, cluster: str) -> dict[tuple[str, str], list[int]]:
    """(topic, partition directory name) -> the committed offset of every group that has one."""
    out: dict[tuple[str, str], list[int]] = {}
    groups = f"{cluster}/groups/consumers"
    for group in filer.list(groups):
        if not group.is_dir:
            continue  # <group>.json: the group's membership state
        offsets = f"{groups}/{group.name}/offsets"
        for topic in filer.list(offsets):
            for partition in filer.list(f"{offsets}/{topic.name}/partitions"):
                commit = filer.read_json(f"{offsets}/{topic.name}/partitions/{partition.name}")
                if (
                    isinstance(commit, dict)
                    and isinstance(commit.get("offset"), int)
                    and commit["offset"] >= 0
                ):
                    key = (topic.name, partition.name.removesuffix(".json"))
                    out.setdefault(key, []).append(commit["offset"])
    return out


def sweep(filer: Filer, bucket: str, *, retention_s: float, now_s: float | None = None) -> SweepResult:
    """One pass over every cluster, topic and partition of `bucket`."""
    now_s = time.time() if now_s is None else now_s
    result = SweepResult()
    root = f"/buckets/{bucket}/clusters"
    for cluster_entry in filer.list(root):
        if not cluster_entry.is_dir:
            continue
        cluster = f"{root}/{cluster_entry.name}"
        committed = _committed_offsets(filer, cluster)
        for topic in filer.list(f"{cluster}/topics"):
            if not topic.is_dir or topic.name == "uuids":
                continue
            partitions = f"{cluster}/topics/{topic.name}/partitions"
            for partition in filer.list(partitions):
                if not partition.is_dir:
                    continue
                result.partitions += 1
                records = f"{partitions}/{partition.name}/records"
                batches = [
                    StoredBatch(int(e.name.split(".", 1)[0]), e.mtime_s, e.name)
                    for e in filer.list(records)
                    if e.name.endswith(".batch") and e.name.split(".", 1)[0].isdigit()
                ]
                doomed = deletable(
                    batches,
                    committed.get((topic.name, partition.name), []),
                    now_s=now_s,
                    retention_s=retention_s,
                )
                for batch in doomed:
                    filer.delete(f"{records}/{batch.name}")
                result.deleted += len(doomed)
                result.kept += len(batches) - len(doomed)
    return result


def run(filer_url: str, bucket: str, *, retention_s: float, interval_s: float) -> None:
    """Sweep every `interval_s` until stopped (a failed sweep is logged and retried)."""
    with httpx.Client(timeout=30) as client:
        filer = Filer(filer_url, client)
        while True:
            started = time.monotonic()
            try:
                done = sweep(filer, bucket, retention_s=retention_s)
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                log.warning("kafka retention: sweep failed: %r", exc)
            else:
                if done.deleted:
                    log.info(
                        "kafka retention: deleted %d read batches, kept %d, over %d partitions in %.1fs",
                        done.deleted, done.kept, done.partitions, time.monotonic() - started,
                    )  # fmt: skip
            time.sleep(interval_s)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--filer", required=True, help="SeaweedFS filer URL, e.g. http://127.0.0.1:8888")
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--retention-s", type=float, required=True)
    parser.add_argument("--interval-s", type=float, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    with contextlib.suppress(KeyboardInterrupt):
        run(args.filer, args.bucket, retention_s=args.retention_s, interval_s=args.interval_s)


if __name__ == "__main__":
    main()

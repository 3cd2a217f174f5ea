"""risk's ServiceSpec for tests that run it in process."""

from __future__ import annotations

import dataclasses
import functools
import uuid

from runtime.service import ServiceSpec
from services.risk.consumers import CLUSTERS_GROUP
from services.risk.main import SPEC, build


def risk_spec() -> ServiceSpec:
    """risk with a correlation-clusters consumer group of its own: the tests'
    shared tansu keeps a group's earlier members (a service stopped by a
    failed or timed-out test) and makes the next joiner of the same group wait
    out a rebalance, seen as SyncGroup timeouts of minutes. Fills groups are
    the callers' to choose, as before."""
    return dataclasses.replace(
        SPEC, build=functools.partial(build, clusters_group=f"{CLUSTERS_GROUP}.test-{uuid.uuid4().hex[:8]}")
    )

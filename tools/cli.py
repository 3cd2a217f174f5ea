"""tradingctl: the project's command line.

Sub-commands are thin: each delegates to the module that owns the work.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# The released contract: a buf image of proto/ recorded by `tradingctl release`.
# `buf breaking` compares the working tree against it; changing it is the
# explicit, reviewable act of releasing.
RELEASED_IMAGE = ROOT / "contracts" / "released.binpb"
RELEASE_NOTE = ROOT / "contracts" / "RELEASED.md"
# The TypeScript SDK, relative to a workspace root: its own buf template, run
# from the root with protoc-gen-es from its node_modules (pinned by its lock).
TS_SDK = Path("clients") / "typescript-sdk"


def _env() -> dict[str, str]:
    # Local protoc plugins and buf live next to this interpreter.
    return dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def _run(argv: list[str], *, quiet: bool = False, cwd: Path = ROOT) -> int:
    """Run a tool; `quiet` hides its chatter unless it fails."""
    print("+ " + " ".join(str(a) for a in argv), file=sys.stderr, flush=True)
    if not quiet:
        return subprocess.call(argv, cwd=cwd, env=_env())
    done = subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
    return done.returncode


def _buf(*args: str, quiet: bool = False, cwd: Path = ROOT) -> int:
    return _run([str(BIN / "buf"), *args], quiet=quiet, cwd=cwd)


# --- the contract gates (each takes the workspace root, so tests can run them on a copy)


def lint_ok(root: Path = ROOT) -> bool:
    return _buf("lint", cwd=root) == 0


def format_ok(root: Path = ROOT) -> bool:
    # Only our module: the staged third-party files are not ours to format.
    return _buf("format", "proto", "-d", "--exit-code", cwd=root) == 0


def breaking_ok(root: Path = ROOT) -> bool:
    """No breaking change (FILE rules) against the released baseline."""
    return _buf("breaking", "proto", "--against", str(root / RELEASED_IMAGE.relative_to(ROOT)), cwd=root) == 0


def cmd_gen(_: argparse.Namespace) -> int:
    """Stage third-party protos and regenerate gen/ (and the TypeScript SDK's src/gen)
    from proto/, and docs/settings.md from the settings tree."""
    from tools import protogen, settings_doc

    protogen.stage_third_party()
    rc = _buf("generate", quiet=True)
    if rc == 0:
        protogen.finish_generated_tree(ROOT / "gen")
        rc = _generate_ts(ROOT)
    settings_doc.write()
    return rc


def _generate_ts(root: Path, *args: str) -> int:
    """Generate the TypeScript SDK's src/gen (`args`: e.g. `-o DIR`), after
    `npm ci` when its toolchain is not installed yet."""
    sdk = root / TS_SDK
    if not (sdk / "node_modules" / ".bin" / "protoc-gen-es").exists():
        if shutil.which("npm") is None:
            print(f"npm is needed to generate {TS_SDK} (node 20+)", file=sys.stderr)
            return 1
        if _run(["npm", "ci", "--no-audit", "--no-fund"], quiet=True, cwd=sdk) != 0:
            return 1
    return _buf("generate", "--template", str(TS_SDK / "buf.gen.yaml"), *args, quiet=True, cwd=root)


def generated_is_fresh(root: Path = ROOT) -> bool:
    """Regenerate into a scratch directory and compare with the committed gen/
    (and the TypeScript SDK's src/gen)."""
    from tools import protogen

    with tempfile.TemporaryDirectory() as tmp:
        if _buf("generate", "-o", tmp, quiet=True, cwd=root) != 0:
            return False
        protogen.finish_generated_tree(Path(tmp) / "gen")
        stale: list[str] = []
        _diff_trees(Path(tmp) / "gen" / "python" / "src", root / "gen" / "python" / "src", stale)
        # A workspace copy without the TypeScript SDK has none of it to check.
        if (root / TS_SDK).is_dir():
            if _generate_ts(root, "-o", tmp) != 0:
                return False
            _diff_trees(Path(tmp) / TS_SDK / "src" / "gen", root / TS_SDK / "src" / "gen", stale)
        for line in stale[:20]:
            print(f"  stale: {line}", file=sys.stderr)
        return not stale


def _diff_trees(fresh: Path, committed: Path, out: list[str]) -> None:
    cmp = filecmp.dircmp(fresh, committed, ignore=["__pycache__", "trading_contracts.egg-info"])
    out += [f"missing {committed / n}" for n in cmp.left_only]
    out += [f"not generated {committed / n}" for n in cmp.right_only]
    out += [f"differs {committed / n}" for n in cmp.diff_files]
    for name in cmp.common_files:
        if (fresh / name).read_bytes() != (committed / name).read_bytes():  # dircmp is shallow
            out.append(f"differs {committed / name}")
    for name in cmp.common_dirs:
        _diff_trees(fresh / name, committed / name, out)


def _settings_doc_is_fresh() -> bool:
    from tools import settings_doc

    if settings_doc.is_fresh():
        return True
    print("  stale: docs/settings.md (run ./dev gen)", file=sys.stderr)
    return False


def cmd_check(args: argparse.Namespace) -> int:
    """Contract checks (lint, format, breaking, gen freshness), the settings
    document's freshness, and code checks."""
    from tools import protogen

    protogen.stage_third_party()
    checks: list[tuple[str, bool]] = [("buf lint", lint_ok()), ("buf format", format_ok())]
    if RELEASED_IMAGE.exists():
        checks.append(("buf breaking", breaking_ok()))
    else:
        print("buf breaking: no released contract yet (run `./dev release`)", file=sys.stderr)
    checks.append(("gen/ is fresh", generated_is_fresh()))
    checks.append(("docs/settings.md is fresh", _settings_doc_is_fresh()))
    if not args.contracts_only:
        checks.append(("ruff", _run([str(BIN / "ruff"), "check", "."]) == 0))
        checks.append(("ruff format", _run([str(BIN / "ruff"), "format", "--check", "."], quiet=True) == 0))
        checks.append(("mypy", _run([str(BIN / "mypy"), "."]) == 0))
    width = max(len(name) for name, _ in checks)
    for name, ok in checks:
        print(f"{name:<{width}}  {'ok' if ok else 'FAILED'}")
    return 0 if all(ok for _, ok in checks) else 1


def cmd_release(args: argparse.Namespace) -> int:
    """Record the current contracts as the released baseline for `buf breaking`."""
    from tools import protogen

    protogen.stage_third_party()
    if _buf("lint") != 0:
        return 1
    RELEASED_IMAGE.parent.mkdir(exist_ok=True)
    if _buf("build", "proto", "--exclude-source-info", "-o", str(RELEASED_IMAGE)) != 0:
        return 1
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    from runtime import contracts

    packages = sorted({s.file.package for s in contracts.services()} | {"trading.common.v1"})
    RELEASE_NOTE.write_text(
        "# Released contracts\n\n"
        "`released.binpb` is the buf image of `proto/` that `buf breaking` (FILE) compares\n"
        "against in CI. Replacing it (`./dev release`) is the act of releasing: review it\n"
        "like any other change. A breaking change to a released package needs a new\n"
        "package version (`v2` beside `v1`).\n\n"
        f"- version: {args.version}\n"
        f"- released: {dt.date.today().isoformat()} from commit {commit or 'unknown'}\n"
        f"- packages: {', '.join(packages)}\n"
    )
    print(f"released contracts {args.version} -> {RELEASED_IMAGE.relative_to(ROOT)}")
    return 0


def cmd_test(argv: list[str]) -> int:
    """The whole test suite (servers are started by the tests' fixtures);
    ``--unit``: only the unit layer (pure logic and servicers on in-memory
    adapters: no server, under a minute)."""
    from tools import protogen

    protogen.stage_third_party()
    if "--unit" in argv:
        argv = ["tests/unit", *(a for a in argv if a != "--unit")]
    return _run([sys.executable, "-m", "pytest", *argv])


def cmd_run(args: argparse.Namespace) -> int:
    """Infrastructure plus all eleven services, until Ctrl-C."""
    from runtime.config import SERVICE_NAMES, get_settings
    from runtime.telemetry import configure_logging
    from tools.supervisor import run_platform

    settings = get_settings()
    configure_logging(settings.telemetry, "platform")
    names = args.services or list(SERVICE_NAMES)
    return asyncio.run(
        run_platform(settings, names, ready_timeout=args.ready_timeout, replicas=args.replicas)
    )


def cmd_health(args: argparse.Namespace) -> int:
    """grpc.health.v1 Check of one service (or, with --all, every service) over
    mutual TLS (as the operator), printing why when one is not SERVING (a
    stuck consumer or relay, a dependency down); exit 0 when all are SERVING."""
    from runtime.config import SERVICE_NAMES, get_settings
    from runtime.health import HealthProbe
    from tools.supervisor import health_probe

    settings = get_settings()

    def show(answer: HealthProbe, prefix: str = "") -> None:
        print(f"{prefix}{answer.status}" + (f" ({answer.reason})" if answer.reason else ""))

    if args.all:

        async def check_all() -> list[HealthProbe]:
            return list(
                await asyncio.gather(
                    *(
                        health_probe(settings, n, service=args.service, timeout=args.timeout)
                        for n in SERVICE_NAMES
                    )
                )
            )

        answers = asyncio.run(check_all())
        width = max(map(len, SERVICE_NAMES))
        for name, answer in zip(SERVICE_NAMES, answers, strict=True):
            show(answer, f"{name:<{width}}  ")
        return 0 if all(a.serving for a in answers) else 1
    callee = args.callee
    if callee is None and args.address:
        # The certificate the server must present names its service: the one
        # the settings place at this address, else at its port (a container
        # checks itself on 127.0.0.1 while the settings name it by host).
        port = args.address.rpartition(":")[2]
        callee = next((n for n in SERVICE_NAMES if settings.address_of(n) == args.address), None) or next(
            (n for n in SERVICE_NAMES if settings.address_of(n).rpartition(":")[2] == port), None
        )
    if callee is None:
        where = (
            f"no service of the settings listens on {args.address}" if args.address else "no service named"
        )
        print(f"health: {where}; name it with --callee (e.g. --callee risk)", file=sys.stderr)
        return 2
    answer = asyncio.run(health_probe(settings, callee, args.address, args.service, timeout=args.timeout))
    show(answer)
    return 0 if answer.serving else 1


def cmd_infra(argv: list[str]) -> int:
    from tools import infra

    return int(infra.main(argv))


def cmd_security(argv: list[str]) -> int:
    """Credentials of a deployment (tools/security_init.py)."""
    from tools import security_init

    return security_init.main(argv)


def cmd_bench(argv: list[str]) -> int:
    """The benchmark suite (bench/README.md): --quick for CI, --full to measure."""
    import bench

    return int(bench.main(argv))


def cmd_train(argv: list[str]) -> int:
    """Train the decision service's models (services/decision/train.py)."""
    from services.decision import train

    return train.main(argv)


def cmd_deadletters(argv: list[str]) -> int:
    from tools import deadletters

    return deadletters.main(argv)


def cmd_audit(argv: list[str]) -> int:
    from tools import audit

    return audit.main(argv)


# Sub-commands that hand their arguments to another program's own parser.
PASSTHROUGH = {
    "test": (cmd_test, "run the test suite (arguments go to pytest; --unit: the unit layer only)"),
    "infra": (cmd_infra, "local servers: up | status | nats-config"),
    "security": (cmd_security, "init: PKI, secrets, NATS config, Redis ACL, PostgreSQL roles (idempotent)"),
    "bench": (cmd_bench, "benchmarks: --quick | --full (see bench/README.md)"),
    "deadletters": (cmd_deadletters, "list | redrive dead letters of any consumer"),
    "train": (cmd_train, "train the decision service's models (see services/decision/train.py)"),
    "audit": (cmd_audit, "replay | verify a tenant against the audit store"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in PASSTHROUGH:
        return int(PASSTHROUGH[argv[0]][0](argv[1:]))
    parser = argparse.ArgumentParser(prog="tradingctl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("gen", help="regenerate gen/ and the TS SDK from proto/, and docs/settings.md")
    gen.set_defaults(func=cmd_gen)

    check = sub.add_parser("check", help="contract checks, docs/settings.md freshness, ruff and mypy")
    check.add_argument("--contracts-only", action="store_true", help="only the buf and gen/ checks")
    check.set_defaults(func=cmd_check)

    release = sub.add_parser("release", help="record the current contracts as released")
    release.add_argument("version", help="release name, e.g. 1.0.0")
    release.set_defaults(func=cmd_release)

    run = sub.add_parser("run", help="run infrastructure and all services")
    run.add_argument("services", nargs="*", help="only these services (default: all eleven)")
    run.add_argument("--ready-timeout", type=float, default=60.0)
    run.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="processes per service, each on its own port; clients balance over them",
    )
    run.set_defaults(func=cmd_run)

    from runtime.config import SERVICE_NAMES

    health = sub.add_parser("health", help="grpc health check of one service (mutual TLS, as the operator)")
    health.add_argument("--address", help="host:port (default: the callee's address from the settings)")
    health.add_argument(
        "--callee",
        choices=SERVICE_NAMES,
        help="the service listening there, whose certificate the server must present "
        "(default: the service the settings place at --address)",
    )
    health.add_argument("--all", action="store_true", help="check every service of the settings")
    health.add_argument("--service", default="", help="grpc health service name ('' = whole server)")
    health.add_argument("--timeout", type=float, default=2.0)
    health.set_defaults(func=cmd_health)

    for name, (_, help_text) in PASSTHROUGH.items():
        sub.add_parser(name, help=help_text, add_help=False)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

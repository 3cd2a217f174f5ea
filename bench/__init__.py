"""The benchmark suite: measures every path of the brief's target table
against the running platform, with the latency floors measured in the same
run. See bench/README.md; entry point ``python -m bench --quick | --full``."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Run the suite with command-line arguments `argv`; returns the exit status."""
    # Imported here so `import bench` stays cheap (the CLI imports it eagerly).
    from bench.run import main as run_main

    return run_main(argv)


__all__ = ["main"]

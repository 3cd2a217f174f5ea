"""Writing files that hold keys and secrets: atomically, with their mode from the start.

One place for it because every credential writer needs the same two moves:
replace a file so a reader sees the old or the new content, never half
(certificates, ACL files, server configs), and create a file only if it does
not exist yet, so concurrent processes agree on one value (secrets).
"""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: bytes | str, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``; the file has ``mode`` whatever the umask."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(raw)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def create_once(path: Path, value: str, mode: int = 0o600) -> bool:
    """Create ``path`` holding ``value`` unless it exists; True when this call
    created it (a concurrent creator's value wins otherwise)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    try:
        os.link(tmp, path)  # fails when the file exists: an existing value is never replaced
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True

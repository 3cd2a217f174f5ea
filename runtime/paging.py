"""Page tokens and sizes, the same for every List RPC.

A page token is an opaque, url-safe string that encodes the keyset cursor
(the sort key of the last row returned). Clients must treat it as opaque; the
server rejects tokens it did not write with INVALID_ARGUMENT.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


class InvalidPageTokenError(ValueError):
    """A page token that this server did not issue (or that was altered)."""


def page_size(requested: int) -> int:
    """The effective page size: 0 means the default; validation bounds the rest."""
    return DEFAULT_PAGE_SIZE if requested <= 0 else min(requested, MAX_PAGE_SIZE)


def encode_token(cursor: dict[str, Any]) -> str:
    raw = json.dumps(cursor, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> dict[str, Any]:
    """The cursor in `token`, or {} for the first page."""
    if not token:
        return {}
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        cursor = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise InvalidPageTokenError("page_token is not a token this server issued") from exc
    if not isinstance(cursor, dict):
        raise InvalidPageTokenError("page_token is not a token this server issued")
    return cursor

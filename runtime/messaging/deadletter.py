"""Dead-letter records, shared by both transports.

A dead-lettered message keeps the original bytes as its value and the original
headers, plus `x-dlq-*` headers saying why, how often it was tried, where it
came from and which consumer gave up. The transport parts (publish to the DLQ,
list, re-drive) live in `kafka/deadletter.py` and `nats/deadletter.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from runtime.messaging import headers as h
from runtime.messaging.base import DeadLetter, DeadLetterReason

# Long tracebacks do not belong in headers; the logs have them.
MAX_ERROR_CHARS = 1000


def describe_error(error: BaseException | str) -> str:
    """`x-dlq-error` text: exception type and message on one line, truncated."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    # Header values must be one line (NATS headers are MIME-style).
    return " ".join(text.split())[:MAX_ERROR_CHARS]


def dead_letter_headers(
    original: Mapping[str, str],
    *,
    reason: DeadLetterReason,
    error: BaseException | str,
    attempts: int,
    source: str,
    consumer: str,
) -> dict[str, str]:
    """Original headers plus the x-dlq-* ones (earlier x-dlq-* replaced)."""
    out = h.without_dlq(original)
    out[h.DLQ_REASON] = reason.value
    out[h.DLQ_ERROR] = describe_error(error)
    out[h.DLQ_ATTEMPTS] = str(attempts)
    out[h.DLQ_SOURCE] = source
    out[h.DLQ_CONSUMER] = consumer
    out[h.DLQ_FAILED_AT] = datetime.now(UTC).isoformat(timespec="milliseconds")
    return out


def dead_letter_record(
    dlq_id: str, value: bytes, headers: Mapping[str, str], key: bytes | None = None
) -> DeadLetter:
    """A DeadLetter from a message read back from a DLQ."""
    try:
        attempts = int(headers.get(h.DLQ_ATTEMPTS, "0"))
    except ValueError:
        attempts = 0
    return DeadLetter(
        id=dlq_id,
        consumer=headers.get(h.DLQ_CONSUMER, ""),
        reason=headers.get(h.DLQ_REASON, ""),
        error=headers.get(h.DLQ_ERROR, ""),
        attempts=attempts,
        source=headers.get(h.DLQ_SOURCE, ""),
        failed_at=headers.get(h.DLQ_FAILED_AT, ""),
        value=value,
        headers=h.without_dlq(headers),
        key=key,
    )

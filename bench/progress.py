"""Progress of the long-running benchmark on stderr, shown only on a terminal.

tqdm draws the bar on stderr and turns itself off when stderr is not a TTY
(``disable=None``): CI logs and redirected output get the plain ``bench:``
lines only. Lines printed while a bar is drawn go through :func:`say`, which
writes them above the bar instead of through it.
"""

from __future__ import annotations

import sys
from typing import Never

from tqdm import tqdm


def steps(total: int, desc: str) -> tqdm[Never]:
    """A bar of `total` steps on stderr (off when stderr is not a terminal)."""
    return tqdm(
        total=total, desc=desc, unit="step", file=sys.stderr, disable=None, dynamic_ncols=True, leave=False
    )


def say(text: str) -> None:
    """One line on stderr, above a bar that is being drawn."""
    tqdm.write(text, file=sys.stderr)
    sys.stderr.flush()

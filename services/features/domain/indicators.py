"""The incremental indicators (O(1) state and work per value): EMA, Wilder's
RSI, rolling standard deviation, rolling VWAP. See the package docstring
for the choices they make."""

from __future__ import annotations

import math
from collections import deque
from decimal import ROUND_HALF_EVEN, Context, Decimal, DivisionByZero, InvalidOperation
from typing import Final

import numpy as np
import numpy.typing as npt

from domain.numbers import EXACT, ZERO

# Averages (EMA, VWAP division, mid): ample precision, rounding half-even.
AVERAGES: Final = Context(prec=34, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero])
_TWO: Final = Decimal(2)


class Ema:
    """Exponential moving average in Decimal, seeded with the first value."""

    __slots__ = ("_alpha", "value")

    def __init__(self, period: int) -> None:
        self._alpha = AVERAGES.divide(_TWO, Decimal(period + 1))
        self.value: Decimal | None = None

    def update(self, x: Decimal) -> Decimal:
        if self.value is None:
            self.value = x
        else:
            self.value = AVERAGES.add(
                self.value, AVERAGES.multiply(self._alpha, AVERAGES.subtract(x, self.value))
            )
        return self.value


class WilderRsi:
    """Relative strength index with Wilder's smoothing, fed price changes."""

    __slots__ = ("_avg_gain", "_avg_loss", "_count", "_period")

    def __init__(self, period: int) -> None:
        self._period = period
        self._count = 0
        # Plain sums while seeding (count < period), Wilder averages after.
        self._avg_gain = 0.0
        self._avg_loss = 0.0

    @property
    def seeded(self) -> bool:
        return self._count >= self._period

    def update(self, change: float) -> float:
        gain = change if change > 0 else 0.0
        loss = -change if change < 0 else 0.0
        n = self._period
        if self._count < n:
            self._avg_gain += gain
            self._avg_loss += loss
            self._count += 1
            if self._count == n:
                self._avg_gain /= n
                self._avg_loss /= n
        else:
            self._avg_gain = (self._avg_gain * (n - 1) + gain) / n
            self._avg_loss = (self._avg_loss * (n - 1) + loss) / n
        return self.value

    @property
    def value(self) -> float:
        if self._count == 0:
            return 50.0
        # While seeding the sums share one divisor, which cancels in the ratio.
        gain, loss = self._avg_gain, self._avg_loss
        if loss == 0.0:
            return 100.0 if gain > 0.0 else 50.0
        return 100.0 - 100.0 / (1.0 + gain / loss)


class RollingStd:
    """Sample standard deviation over a fixed window (see the module docstring)."""

    __slots__ = ("_buffer", "_m2", "_mean", "_since_resync", "_window")

    def __init__(self, window: int) -> None:
        self._window = window
        self._buffer: deque[float] = deque(maxlen=window)
        self._mean = 0.0
        self._m2 = 0.0
        self._since_resync = 0

    def update(self, x: float) -> float:
        buf = self._buffer
        if len(buf) < self._window:
            buf.append(x)
            n = len(buf)
            delta = x - self._mean
            self._mean += delta / n
            self._m2 += delta * (x - self._mean)
        else:
            old = buf[0]
            buf.append(x)  # evicts old
            old_mean = self._mean
            self._mean = old_mean + (x - old) / self._window
            self._m2 += (x - old) * (x - self._mean + old - old_mean)
            self._since_resync += 1
            if self._since_resync >= self._window:
                self._resync()
        return self.value

    def _resync(self) -> None:
        """Two-pass recompute from the window: bounds the drift of the updates."""
        buf = self._buffer
        mean = math.fsum(buf) / len(buf)
        self._mean = mean
        self._m2 = math.fsum((v - mean) ** 2 for v in buf)
        self._since_resync = 0

    @property
    def full(self) -> bool:
        return len(self._buffer) == self._window

    @property
    def value(self) -> float:
        n = len(self._buffer)
        if n < 2:
            return 0.0
        return math.sqrt(max(self._m2, 0.0) / (n - 1))


class RollingVwap:
    """Volume-weighted average price over the last ``window`` ticks, exact sums."""

    __slots__ = ("_buffer", "_notional", "_volume")

    def __init__(self, window: int) -> None:
        self._buffer: deque[tuple[Decimal, Decimal]] = deque(maxlen=window)
        self._notional = ZERO
        self._volume = ZERO

    def update(self, price: Decimal, size: Decimal) -> Decimal | None:
        buf = self._buffer
        if len(buf) == buf.maxlen:
            old_notional, old_volume = buf[0]
            self._notional = EXACT.subtract(self._notional, old_notional)
            self._volume = EXACT.subtract(self._volume, old_volume)
        notional = EXACT.multiply(price, size) if size else ZERO
        buf.append((notional, size))
        self._notional = EXACT.add(self._notional, notional)
        self._volume = EXACT.add(self._volume, size)
        return self.value

    @property
    def value(self) -> Decimal | None:
        if self._volume == 0:
            return None
        return AVERAGES.divide(self._notional, self._volume)


# ------------------------------------------------------------------ across symbols
# The float indicators of many symbols at once: one column (array slot) per
# symbol, numpy operations over the symbols a batch updates together. The
# arithmetic is the scalar classes', operation for operation in the same
# order (IEEE float64 either way), so the values are the same bit for bit
# (tests/unit/services/test_features_domain.py compares them on random ticks).


class RsiColumns:
    """:class:`WilderRsi` of many series, one per column."""

    __slots__ = ("_avg_gain", "_avg_loss", "_count", "_period")

    def __init__(self, period: int) -> None:
        self._period = period
        self._avg_gain = np.zeros(0)
        self._avg_loss = np.zeros(0)
        self._count = np.zeros(0, dtype=np.int64)

    def add_column(self) -> int:
        """A new series (its column index)."""
        self._avg_gain = np.append(self._avg_gain, 0.0)
        self._avg_loss = np.append(self._avg_loss, 0.0)
        self._count = np.append(self._count, 0)
        return len(self._count) - 1

    def update(self, columns: npt.NDArray[np.intp], change: npt.NDArray[np.float64]) -> None:
        """One price change per column (distinct columns)."""
        n = self._period
        gain = np.where(change > 0, change, 0.0)
        loss = np.where(change < 0, -change, 0.0)
        avg_gain, avg_loss, count = self._avg_gain[columns], self._avg_loss[columns], self._count[columns]
        seeding = count < n
        seeded_now = seeding & (count + 1 == n)
        sum_gain, sum_loss = avg_gain + gain, avg_loss + loss
        self._avg_gain[columns] = np.where(
            seeding, np.where(seeded_now, sum_gain / n, sum_gain), (avg_gain * (n - 1) + gain) / n
        )
        self._avg_loss[columns] = np.where(
            seeding, np.where(seeded_now, sum_loss / n, sum_loss), (avg_loss * (n - 1) + loss) / n
        )
        self._count[columns] = np.where(seeding, count + 1, count)

    def values(self, columns: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
        """:attr:`WilderRsi.value` of each column."""
        gain, loss, count = self._avg_gain[columns], self._avg_loss[columns], self._count[columns]
        with np.errstate(divide="ignore", invalid="ignore"):
            rsi = 100.0 - 100.0 / (1.0 + gain / loss)
        flat = np.where(gain > 0.0, 100.0, 50.0)
        return np.where(count == 0, 50.0, np.where(loss == 0.0, flat, rsi))


class RollingStdColumns:
    """:class:`RollingStd` of many series, one per column (ring buffers in one matrix)."""

    __slots__ = ("_buffer", "_head", "_length", "_m2", "_mean", "_since_resync", "_window")

    def __init__(self, window: int) -> None:
        self._window = window
        self._buffer = np.zeros((0, window))
        self._head = np.zeros(0, dtype=np.intp)  # where the next value goes
        self._length = np.zeros(0, dtype=np.intp)
        self._mean = np.zeros(0)
        self._m2 = np.zeros(0)
        self._since_resync = np.zeros(0, dtype=np.intp)

    def add_column(self) -> int:
        """A new series (its column index)."""
        self._buffer = np.vstack([self._buffer, np.zeros((1, self._window))])
        self._head = np.append(self._head, 0)
        self._length = np.append(self._length, 0)
        self._mean = np.append(self._mean, 0.0)
        self._m2 = np.append(self._m2, 0.0)
        self._since_resync = np.append(self._since_resync, 0)
        return len(self._head) - 1

    def update(self, columns: npt.NDArray[np.intp], x: npt.NDArray[np.float64]) -> None:
        """One value per column (distinct columns)."""
        w = self._window
        length, head = self._length[columns], self._head[columns]
        mean, m2 = self._mean[columns], self._m2[columns]
        filling = length < w
        old = self._buffer[columns, head]  # the value x evicts, where the buffer is full
        self._buffer[columns, head] = x
        self._head[columns] = (head + 1) % w
        n = np.where(filling, length + 1, length)
        self._length[columns] = n
        # Filling (Welford): delta = x - mean; mean += delta / n; m2 += delta * (x - mean).
        delta = x - mean
        fill_mean = mean + delta / n
        fill_m2 = m2 + delta * (x - fill_mean)
        # Full (exact inverse of the evicted value), as RollingStd.update writes it.
        slide_mean = mean + (x - old) / w
        slide_m2 = m2 + (x - old) * (x - slide_mean + old - mean)
        self._mean[columns] = np.where(filling, fill_mean, slide_mean)
        self._m2[columns] = np.where(filling, fill_m2, slide_m2)
        since = np.where(filling, self._since_resync[columns], self._since_resync[columns] + 1)
        self._since_resync[columns] = since
        for column in columns[since >= w]:
            self._resync(int(column))

    def _resync(self, column: int) -> None:
        """:meth:`RollingStd._resync` of one column (fsum is exact: order-free)."""
        values = self._buffer[column].tolist()
        mean = math.fsum(values) / len(values)
        self._mean[column] = mean
        self._m2[column] = math.fsum((v - mean) ** 2 for v in values)
        self._since_resync[column] = 0

    def values(self, columns: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
        """:attr:`RollingStd.value` of each column."""
        n = self._length[columns]
        m2 = self._m2[columns]
        with np.errstate(divide="ignore", invalid="ignore"):
            std = np.sqrt(np.maximum(m2, 0.0) / (n - 1))
        return np.where(n < 2, 0.0, std)

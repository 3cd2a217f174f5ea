"""The regime-switching price process of the ``regime`` synthetic feed.

Pure arithmetic, no I/O: :class:`RegimeProcess` turns standard normal draws
into one symbol's tick log returns; ``feeds.RegimeGenerator`` makes quotes
of them for the live feed, and the decision service's training draws its data
from that same generator (services/decision/train.py), so a model trained on
it meets the same market live.

Each symbol is in one of three regimes, switched per tick by a Markov chain
with the known matrix :data:`TRANSITIONS` (rows: from, columns: to, in the
order of :class:`Regime`). All parameters are per tick of the symbol (not
annualised), so the path does not depend on the feed's rate or on how many
symbols it quotes; ``sigma`` is the base tick volatility of the log mid.

- ``TREND``: drift ``+-trend_drift * sigma`` per tick (the sign drawn when the
  regime starts) plus ``sigma`` noise: momentum, readable from the window
  return, the EMA crossover and the RSI.
- ``MEAN_REVERT``: an Ornstein-Uhlenbeck pull of the log mid towards the
  level it had when the regime started,
  ``r = -reversion * (x - anchor) + reversion_vol * sigma * Z``: a stretched
  price comes back (half-life ``ln 2 / reversion`` ticks).
- ``VOLATILE``: GARCH(1,1) noise without drift,
  ``h = omega + garch_alpha * r_prev^2 + garch_beta * h_prev``, ``r = sqrt(h) Z``,
  with ``omega`` set so the long-run variance is ``(garch_vol * sigma)^2``:
  volatility clusters, the direction is unpredictable.

With the defaults a regime lasts ~400 ticks (trend, mean reversion) or ~300
(volatile) on average; the long-run shares are 36% / 36% / 27%.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Final

import numpy as np


class Regime(enum.IntEnum):
    TREND = 0
    MEAN_REVERT = 1
    VOLATILE = 2


# Per-tick switching probabilities; rows sum to 1. The diagonal is the chance
# of staying: a regime's length is geometric with mean 1 / (1 - P[i][i]).
TRANSITIONS: Final[tuple[tuple[float, float, float], ...]] = (
    (1 - 1 / 400, 1 / 800, 1 / 800),
    (1 / 800, 1 - 1 / 400, 1 / 800),
    (1 / 600, 1 / 600, 1 - 1 / 300),
)

# Standard normal draws one tick of one symbol consumes (the process's three,
# then the quote's five: see feeds.RegimeGenerator).
PROCESS_DRAWS: Final = 3


@dataclass(frozen=True, slots=True)
class RegimeParams:
    """The process's parameters (per tick of one symbol)."""

    # Base volatility of one tick's log return: 1 bp.
    sigma: float = 1.0e-4
    # Trend: drift per tick in units of sigma (0.25: 5 sigma over 20 ticks,
    # against sqrt(20) = 4.5 sigma of noise).
    trend_drift: float = 0.25
    # Mean reversion: share of the gap to the anchor closed per tick (0.3: a
    # half-life of 2 ticks), and the noise in sigmas.
    reversion: float = 0.3
    reversion_vol: float = 1.0
    # Volatile: GARCH(1,1) reaction and persistence; long-run volatility in sigmas.
    garch_alpha: float = 0.10
    garch_beta: float = 0.85
    garch_vol: float = 2.0
    transitions: tuple[tuple[float, float, float], ...] = TRANSITIONS

    def __post_init__(self) -> None:
        if len(self.transitions) != len(Regime) or any(len(r) != len(Regime) for r in self.transitions):
            raise ValueError("transitions must be a 3x3 matrix")
        if any(p < 0 for r in self.transitions for p in r) or any(
            abs(sum(r) - 1.0) > 1e-9 for r in self.transitions
        ):
            raise ValueError("each row of transitions must be probabilities summing to 1")
        if not 0 < self.reversion < 1:
            raise ValueError("reversion must be in (0, 1)")
        if self.garch_alpha < 0 or self.garch_beta < 0 or self.garch_alpha + self.garch_beta >= 1:
            raise ValueError("GARCH needs alpha, beta >= 0 and alpha + beta < 1 (stationary)")
        if self.sigma <= 0:
            raise ValueError("sigma must be positive")

    def stationary(self) -> tuple[float, ...]:
        """Long-run share of ticks in each regime (left eigenvector of the matrix for 1)."""
        matrix = np.asarray(self.transitions, dtype=np.float64)
        values, vectors = np.linalg.eig(matrix.T)
        v = np.real(vectors[:, int(np.argmin(np.abs(values - 1.0)))])
        return tuple(float(x) for x in v / v.sum())

    def describe(self) -> dict[str, object]:
        """The parameters as JSON-able values (recorded with every trained model)."""
        return {
            "sigma": self.sigma,
            "trend_drift": self.trend_drift,
            "reversion": self.reversion,
            "reversion_vol": self.reversion_vol,
            "garch_alpha": self.garch_alpha,
            "garch_beta": self.garch_beta,
            "garch_vol": self.garch_vol,
            "transitions": [list(r) for r in self.transitions],
        }


def _normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


class RegimeProcess:
    """One symbol's log mid under :class:`RegimeParams`.

    Only standard normals go in (uniforms are made of them with the normal
    CDF), so the caller may draw them in blocks of any size and the path
    still depends on the seed alone.
    """

    __slots__ = ("_cum", "_h", "_p", "_r", "_trend", "anchor", "direction", "regime", "x")

    def __init__(self, params: RegimeParams, z_regime: float, z_dir: float) -> None:
        self._p = params
        # Cumulative rows: the next regime is the first whose bound exceeds a uniform.
        self._cum = [tuple(float(c) for c in np.cumsum(row)) for row in params.transitions]
        self._trend = params.trend_drift * params.sigma
        self.x = 0.0  # log mid relative to the start
        self._r = 0.0
        self._h = (params.garch_vol * params.sigma) ** 2
        # The first regime from the long-run shares.
        u, acc = _normal_cdf(z_regime), 0.0
        self.regime = Regime.VOLATILE
        for i, share in enumerate(params.stationary()):
            acc += share
            if u < acc:
                self.regime = Regime(i)
                break
        self.direction = 1.0 if z_dir >= 0 else -1.0
        self.anchor = 0.0

    def step(self, shock: float, z_switch: float, z_dir: float) -> float:
        """Advance one tick: maybe switch regime, then return the tick's log return."""
        p = self._p
        u = _normal_cdf(z_switch)
        row = self._cum[self.regime]
        nxt = Regime.VOLATILE if u >= row[1] else Regime.MEAN_REVERT if u >= row[0] else Regime.TREND
        if nxt is not self.regime:
            self.regime = nxt
            self.direction = 1.0 if z_dir >= 0 else -1.0
            self.anchor = self.x
            # Starts at its long-run variance: the cluster grows from the first shocks.
            self._h = (p.garch_vol * p.sigma) ** 2
        if self.regime is Regime.TREND:
            r = self.direction * self._trend + p.sigma * shock
        elif self.regime is Regime.MEAN_REVERT:
            r = -p.reversion * (self.x - self.anchor) + p.reversion_vol * p.sigma * shock
        else:
            long_run = (p.garch_vol * p.sigma) ** 2
            omega = long_run * (1.0 - p.garch_alpha - p.garch_beta)
            self._h = omega + p.garch_alpha * self._r * self._r + p.garch_beta * self._h
            r = math.sqrt(self._h) * shock
        self._r = r
        self.x += r
        return r

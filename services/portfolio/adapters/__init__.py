"""The portfolio's adapters of its ports (:mod:`services.portfolio.ports`):
:mod:`.postgres` (the books), :mod:`.redis` (marketdata's last quotes),
:mod:`.memory` (both in process, for tests)."""

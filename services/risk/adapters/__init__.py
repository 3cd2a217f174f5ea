"""Risk's adapters of its port (:mod:`services.risk.ports`): :mod:`.redis`
(production) and :mod:`.memory` (in process, for tests)."""

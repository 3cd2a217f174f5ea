"""Features' adapters of its ports (:mod:`services.features.ports`):
:mod:`.redis` (latest vectors, instrument universe) and :mod:`.memory` (all
of them in process, for tests)."""

"""Decision's adapters of its ports (services/decision/ports.py):
:mod:`.postgres` (strategies, signals, positions), :mod:`.redis` (the
instrument universe) and :mod:`.memory` (all of them in process memory)."""

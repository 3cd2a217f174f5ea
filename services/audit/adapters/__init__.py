"""Audit's port implementations (services.audit.ports): `postgres` (the
append-only PostgreSQL event store) and `memory` (the event store and the
live state in process, for servicer tests). The lineage graph's adapters are
runtime.graph's."""

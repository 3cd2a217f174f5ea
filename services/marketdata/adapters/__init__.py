"""Marketdata's port implementations (services.marketdata.ports): `postgres`
(instruments), `redis` (last quotes, ``md:quote:{symbol}``) and `memory`
(both in process, for servicer tests)."""

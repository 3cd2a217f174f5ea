"""Implementations of execution's ports (services/execution/ports.py):
`postgres` (orders), `redis` (marketdata's quotes), `grpc` (risk's pre-trade
check) and `memory` (orders and quotes, in process, for fast servicer tests)."""

"""marketdata: instruments, feed adapters, normalised ticks, last quotes.

Modules: `api` (gRPC servicer), `storage` (PostgreSQL adapter), `main` (entry
point), `migrations/` (schema `marketdata`).
"""

"""marketdata: instruments, feed adapters, normalised ticks, last quotes.

Modules: `api` (gRPC servicer), `domain` (pure: ticks, normalisation),
`ports` (instrument store, quote cache), `adapters` (`postgres`: instruments;
`redis`: last quotes; `memory`: both in process, for tests), `feeds` (feed
adapters), `regimes` (the regime-switching generator), `pipeline` (the tick
path), `sample` (replay samples), `main` (entry point), `migrations/`
(schema `marketdata`).
"""

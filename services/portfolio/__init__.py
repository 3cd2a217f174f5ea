"""portfolio: positions, average prices, realised and unrealised PnL, cash.

Modules: `domain` (pure accounting and valuation), `ports` (what the books
and the quote cache promise), `adapters` (PostgreSQL books with RLS, the
Redis last-quote cache, in-memory ones for tests), `views` (books + marks ->
the contract's messages), `consumers` (the idempotent Kafka fill consumer and
the PositionChanged / PortfolioSnapshot events), `api` (gRPC servicer),
`main` (the ServiceSpec: dependencies and wiring). `python -m
services.portfolio` runs it.
"""

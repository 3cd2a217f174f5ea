"""The trading vocabulary the services share: pure values and arithmetic, no I/O.

Each service keeps its own domain package for what is its own (execution's
order state machine, risk's checks, portfolio's books); what the same word
means in several of them lives here once: :mod:`domain.numbers` (exact
decimal arithmetic, the contract's 12 fractional digits), :mod:`domain.positions`
(sides and position arithmetic), :mod:`domain.prices` (the mark of a quote),
:mod:`domain.orders` (order types).
"""

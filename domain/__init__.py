"""The trading vocabulary the services share: pure values and arithmetic, no I/O.

Each service keeps its own domain module for what is its own (execution's
order state machine, risk's checks, portfolio's books); what the same word
means in several of them lives here once.
"""

"""Shared test suites, one per storage port. Not collected by themselves: a
test module subclasses a suite and provides its fixture."""

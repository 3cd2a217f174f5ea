"""Storage adapter integration tests."""

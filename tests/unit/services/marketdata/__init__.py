"""Unit tests of the marketdata service on its in-memory adapters."""

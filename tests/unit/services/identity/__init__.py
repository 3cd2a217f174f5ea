"""Unit tests of the identity service on its in-memory adapters."""

"""Unit tests of the audit service on its in-memory adapters."""

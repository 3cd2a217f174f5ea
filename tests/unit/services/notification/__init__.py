"""Unit tests of the notification service on its in-memory adapters."""

"""Fault tests: servers killed and restarted under a running workload.

Each test starts the servers it breaks on spare ports of its own (never the
session's shared ones, which other tests use); they get the ``integration``
marker from the root conftest."""

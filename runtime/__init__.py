"""Shared runtime of the services: config, gRPC server and client set-up,
messaging, storage pools and telemetry. Services import from here; nothing
here imports from a service."""

"""The ten gRPC services, one package each (api, domain, storage, main)."""

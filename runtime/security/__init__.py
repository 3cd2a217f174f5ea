"""The platform's own trust: principals, secrets, mutual TLS, signed request context (docs/security.md)."""

"""Storage adapters shared by the services: PostgreSQL, Redis, ClickHouse.

Each module turns the typed settings into a ready client with sane timeouts.
Services inject these clients into their own ``storage.py`` adapters.
"""

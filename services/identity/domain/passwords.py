"""The password hashing policy: argon2id, re-hashing when the parameters change.

No I/O (hashing is CPU work; callers run it off the event loop)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError


@dataclass(frozen=True, slots=True)
class PasswordPolicy:
    """argon2id parameters. Defaults: RFC 9106's second recommended option
    (t=3, m=64 MiB, p=4), argon2-cffi's own defaults."""

    time_cost: int = 3
    memory_cost_kib: int = 65536
    parallelism: int = 4

    def hasher(self) -> PasswordHasher:
        return PasswordHasher(
            time_cost=self.time_cost,
            memory_cost=self.memory_cost_kib,
            parallelism=self.parallelism,
            type=Type.ID,
        )


class Passwords:
    """Hash and check passwords with argon2id; say when a stored hash was made
    with other parameters so login can re-hash it (the password is only known
    at that moment)."""

    def __init__(self, policy: PasswordPolicy) -> None:
        self._hasher = policy.hasher()
        # Verified against when the user does not exist, so an unknown e-mail
        # costs the same time as a wrong password (no user enumeration by timing).
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        """True when `password` matches `stored`; None (no such user) still costs one hash."""
        try:
            return self._hasher.verify(stored if stored is not None else self._dummy, password) and (
                stored is not None
            )
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)

"""Redis ACL users, one per principal, generated from one table.

Each principal that uses the cache logs in as its own ACL user (named after
it; password ``get_secret(settings, "redis", principal)``) that may run only
the commands it uses, only on its own key patterns. The ``default`` user is
off, so a connection without credentials can do nothing but AUTH. Key shapes:

- ``t:{<tenant>}:<service>:...``: tenant data (``runtime.storage.redis.tenant_key``);
  risk owns ``t:{*}:risk:*`` (and its outbox's ``risk:outbox:*`` and the
  market-wide correlation clusters ``risk:corr``), the gateway ``t:{*}:gateway:*``.
- ``md:*``: marketdata's shared cache (``runtime.market_cache``: instrument set, last quotes).
- ``features:*``: features' latest vectors (``services.features.adapters.redis.vector_key``).
- ``identity:*``: identity's API key cache, key use times and login failure counters.
- ``decision:members:*``: decision's replica group (runtime.membership).

``%R~pattern`` is read-only (Redis 7+, DragonflyDB). A principal missing from
:data:`REDIS_USERS` (analytics, audit, notification, operator) has no user:
it cannot log in at all. The file form (``aclfile``) is what LocalInfra
starts its redis-server with; :func:`setuser_commands` is the same table as
``ACL SETUSER`` commands for a server managed elsewhere (docs/security.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from runtime.config import Settings
from runtime.outbox_redis import REDIS_OUTBOX_COMMANDS
from runtime.security.files import write_atomic
from runtime.security.principals import check_principal
from runtime.security.secrets import get_secret

# The infrastructure tooling's user (LocalInfra: ACL LOAD on a reused server;
# tests: fixtures and inspection). Every command, every key; no service holds it.
ADMIN_USER = "admin"

# Every user: the health check and readiness probe.
_BASE_COMMANDS: tuple[str, ...] = ("ping",)
# What reading marketdata's shared cache takes (runtime.market_cache, quote lookups).
_MARKET_READ: tuple[str, ...] = ("get", "mget", "exists", "sismember", "smismember")
# MULTI/EXEC pipelines and optimistic transactions (redis-py sends UNWATCH/DISCARD on reset).
_TRANSACTIONS: tuple[str, ...] = ("multi", "exec", "discard", "watch", "unwatch")
# A replica group's heartbeats (runtime.membership.ReplicaGroup).
REPLICA_GROUP_COMMANDS: tuple[str, ...] = ("zadd", "zrem", "zrangebyscore", "zremrangebyscore")
# Lua scripts loaded once and called by SHA (redis-py's register_script does the same).
_SCRIPTS: tuple[str, ...] = ("evalsha", "script|load")


@dataclass(frozen=True)
class Selector:
    """A Redis 7 ACL selector: these commands on these keys only (read and
    write), beside the user's root permissions. How a user may write one key
    of another principal's without any other command on it."""

    commands: tuple[str, ...]
    keys: tuple[str, ...]

    def rule(self) -> str:
        return "(" + " ".join([*(f"+{c}" for c in self.commands), *(f"~{k}" for k in self.keys)]) + ")"


@dataclass(frozen=True)
class RedisUser:
    """One principal's ACL user: its commands and key patterns."""

    principal: str
    commands: tuple[str, ...]
    # Patterns it may read and write.
    read_write: tuple[str, ...] = ()
    # Patterns it may only read.
    read_only: tuple[str, ...] = ()
    # Narrow grants on keys outside its own (see Selector).
    selectors: tuple[Selector, ...] = ()

    def rules(self) -> list[str]:
        """The ACL rules after ``on`` and the password: commands, keys, then selectors."""
        commands = dict.fromkeys((*_BASE_COMMANDS, *self.commands))  # ordered, deduplicated
        return [
            "resetkeys",
            "resetchannels",
            "-@all",
            *(f"+{c}" for c in commands),
            *(f"~{p}" for p in self.read_write),
            *(f"%R~{p}" for p in self.read_only),
            *(s.rule() for s in self.selectors),
        ]


def _users(*users: RedisUser) -> dict[str, RedisUser]:
    table: dict[str, RedisUser] = {}
    for u in users:
        check_principal(u.principal)
        for c in u.commands:
            if c.split("|")[0] in _FORBIDDEN:
                raise ValueError(f"{u.principal}: {c} is an administrative or dangerous command")
        for selector in u.selectors:
            for c in selector.commands:
                if c.split("|")[0] in _FORBIDDEN:
                    raise ValueError(f"{u.principal}: {c} is an administrative or dangerous command")
        table[u.principal] = u
    return table


# Commands no service user may have (@admin/@dangerous and keyspace-wide ones).
_FORBIDDEN = frozenset(
    {"acl", "config", "debug", "flushall", "flushdb", "keys", "shutdown", "save", "bgsave", "monitor",
     "client", "module", "replicaof", "slaveof", "sync", "psync", "migrate", "restore", "eval", "function",
     "script|flush", "swapdb", "move", "select"}
)  # fmt: skip

# The one table. A unit test checks it against the services whose ServiceSpec needs "redis"
# (plus the gateway, which opens its Redis itself).
REDIS_USERS: dict[str, RedisUser] = _users(
    RedisUser(
        "marketdata",
        commands=("get", "mget", "set", "sadd", "exists", "sismember"),
        read_write=("md:*",),
    ),
    RedisUser(
        "features",
        # z*: its replica group, features:members (runtime.membership).
        commands=("get", "set", "exists", "sismember", *REPLICA_GROUP_COMMANDS),
        read_write=("features:*",),
        read_only=("md:instruments",),
    ),
    RedisUser(
        "risk",
        # Its Lua scripts call the hash, sorted-set and string commands listed
        # (the order-rate window reads its neighbours with ZRANGEBYSCORE).
        commands=(
            *_SCRIPTS,
            *_TRANSACTIONS,
            *_MARKET_READ,
            "set",
            "del",
            "hget",
            "hmget",
            "hset",
            "hdel",
            "hgetall",
            "zadd",
            "zrem",
            "zrangebyscore",
            "zremrangebyscore",
            "pexpire",
            *REDIS_OUTBOX_COMMANDS,
        ),
        # risk:outbox:*: its outbox's tenant index, relay lock and set-aside rows;
        # risk:corr: the correlation clusters (market-wide).
        read_write=("t:{*}:risk:*", "risk:outbox:*", "risk:corr"),
        read_only=("md:*",),
    ),
    RedisUser(
        "execution",
        # The order path runs risk's pre-trade check itself (services.risk.check,
        # RedisCheckState): it reads the tenant's risk state, the quotes and the
        # clusters, and may write only the order-rate window and the check
        # markers. Risk's scripts name the keys they touch (EVALSHA needs them
        # writable: the first selector); every command inside a script is
        # checked against these rules, so a SET on the limits is refused.
        commands=(*_SCRIPTS, *_MARKET_READ, "hget", "hgetall", "zrangebyscore"),
        read_only=("md:*", "t:{*}:risk:*", "risk:corr"),
        selectors=(
            Selector(("evalsha",), ("t:{*}:risk:*",)),
            Selector(("zadd", "zrem", "zremrangebyscore", "zrangebyscore", "pexpire"), ("t:{*}:risk:rate",)),
            Selector(("get", "set", "del"), ("t:{*}:risk:check:*",)),
        ),
    ),
    RedisUser("portfolio", commands=_MARKET_READ, read_only=("md:*",)),
    RedisUser(
        "decision",
        # The replica group its replicas share symbols by (runtime.membership).
        commands=(*_MARKET_READ, *REPLICA_GROUP_COMMANDS),
        read_write=("decision:members:*",),
        read_only=("md:instruments",),
    ),
    RedisUser(
        "identity",
        # SCAN: the API key cache resync (SCAN lists key names of the whole keyspace, values stay closed).
        commands=(
            *_TRANSACTIONS,
            "get",
            "set",
            "del",
            "exists",
            "incrby",
            "expire",
            "ttl",
            "hset",
            "hmget",
            "scan",
        ),
        read_write=("identity:*",),
    ),
    RedisUser(
        "gateway",
        # Rate limits (scripts: token leases with GET, SET, PTTL; INCR, PEXPIRE), Idempotency-Key
        # slots, API key checks.
        commands=(*_SCRIPTS, "get", "set", "del", "incr", "pexpire", "pttl", "hset"),
        read_write=("t:{*}:gateway:*", "identity:apikey_last_used"),
        read_only=("identity:apikey:*",),
    ),
)


def _hash(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def acl_lines(password_of: Callable[[str], str]) -> list[str]:
    """The ACL file: default user off, the admin, one user per entry of the table.

    Passwords appear only as SHA-256 hashes (``#<hex>``).
    """
    lines = [
        "user default off resetpass resetkeys resetchannels -@all",
        f"user {ADMIN_USER} on #{_hash(password_of(ADMIN_USER))} ~* &* +@all",
    ]
    for name, user in sorted(REDIS_USERS.items()):
        lines.append(" ".join(["user", name, "on", f"#{_hash(password_of(name))}", *user.rules()]))
    return lines


def setuser_commands(password_of: Callable[[str], str]) -> list[list[str]]:
    """The table as ``ACL SETUSER`` argument lists (a server whose ACLs are set live)."""
    commands = [["ACL", "SETUSER", "default", "off", "resetpass", "resetkeys", "resetchannels", "-@all"]]
    for name, user in sorted(REDIS_USERS.items()):
        commands.append(
            ["ACL", "SETUSER", name, "reset", "on", f"#{_hash(password_of(name))}", *user.rules()]
        )
    return commands


def passwords(settings: Settings) -> Mapping[str, str]:
    """Every Redis user's password (generated on first use in development)."""
    return {name: get_secret(settings, "redis", name) for name in (ADMIN_USER, *REDIS_USERS)}


def acl_path(settings: Settings) -> Path:
    return settings.var_dir / "redis" / "users.acl"


def write_acl_file(settings: Settings, path: Path | None = None) -> Path:
    """Write the ACL file for `settings`' secrets (mode 0600); returns its path."""
    path = path or acl_path(settings)
    secret = passwords(settings)
    text = "\n".join(acl_lines(secret.__getitem__)) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, text)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m runtime.security.redis_acl [--setuser] [PATH]``: the ACL file
    for this environment's secrets (written to PATH, mode 0600), or with
    ``--setuser`` the ``ACL SETUSER`` commands (for ``redis-cli`` against a
    server whose users are managed live). Production reads the secrets from
    TRADING_SECRET__REDIS__<USER> or the mounted files, never generates them."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("path", nargs="?", type=Path, help="where to write the ACL file")
    parser.add_argument("--setuser", action="store_true", help="print ACL SETUSER commands instead")
    args = parser.parse_args(argv)
    settings = Settings()
    secret = passwords(settings)
    if args.setuser:
        for command in setuser_commands(secret.__getitem__):
            print(" ".join(command))
    elif args.path is not None:
        print(write_acl_file(settings, args.path))
    else:
        print("\n".join(acl_lines(secret.__getitem__)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

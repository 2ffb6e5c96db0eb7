"""Bearer tokens with roles. Tokens are configured by their sha256 only (hashed at rest): the
environment, a secret store or a config file never holds a usable token.

``METERBOOK_API_TOKENS`` lists ``name:role:sha256-hex`` entries separated by commas or white
space; ``meterbook api token --name alice --role support`` makes a new token and prints its
entry. A token is 256 random bits, so one sha256 (not a slow password hash) is enough: there is
nothing to guess from the hash.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

TOKEN_PREFIX = "mbk_"
TOKEN_HASH_PATTERN = re.compile(r"^[0-9a-f]{64}$")
TOKEN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MAX_TOKEN_CHARS = 200


class Role(StrEnum):
    VIEWER = "viewer"  # reads
    SUPPORT = "support"  # reads, grants credits up to its limit
    FINANCE = "finance"  # reads, grants credits, approves grants over the threshold, adjusts


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: the token's name (recorded in the audit log) and its role."""

    name: str
    role: Role


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_entry(name: str, role: Role, token: str) -> str:
    """The ``METERBOOK_API_TOKENS`` entry of a token: its name, role and hash, never the token."""
    return f"{name}:{role.value}:{hash_token(token)}"


def parse_tokens(text: str) -> dict[str, Principal]:
    """The configured principals by token hash. A malformed entry is refused with its position,
    never skipped (a skipped entry would lock its user out silently)."""
    principals: dict[str, Principal] = {}
    names: set[str] = set()
    for number, entry in enumerate(re.split(r"[\s,]+", text.strip()), start=1):
        if not entry:
            continue
        parts = entry.split(":")
        if len(parts) != 3:
            raise ValueError(
                f"METERBOOK_API_TOKENS entry {number} must be name:role:sha256-hex "
                "(make one with `meterbook api token --name NAME --role ROLE`)."
            )
        name, role, token_hash = parts
        if not TOKEN_NAME_PATTERN.match(name):
            raise ValueError(
                f"METERBOOK_API_TOKENS entry {number}: the name must be 1-64 letters, digits or "
                "_.@-."
            )
        if role not in Role._value2member_map_:
            raise ValueError(
                f"METERBOOK_API_TOKENS entry {number} ({name}): role {role!r} is not one of "
                f"{', '.join(r.value for r in Role)}."
            )
        if not TOKEN_HASH_PATTERN.match(token_hash):
            raise ValueError(
                f"METERBOOK_API_TOKENS entry {number} ({name}): the third part must be the "
                "token's sha256 in lower-case hex (64 characters), not the token itself."
            )
        if name in names or token_hash in principals:
            raise ValueError(f"METERBOOK_API_TOKENS entry {number} ({name}) is a duplicate.")
        names.add(name)
        principals[token_hash] = Principal(name=name, role=Role(role))
    return principals


def principal_of(authorization: str | None, principals: Mapping[str, Principal]) -> Principal:
    """The principal of an ``Authorization: Bearer`` header; raises ``AuthenticationError``."""
    if not authorization:
        raise AuthenticationError("missing_token", "Send a token: Authorization: Bearer <token>.")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError(
            "invalid_token", "The Authorization header must be 'Bearer <token>'."
        )
    if len(token) > MAX_TOKEN_CHARS:
        raise AuthenticationError("invalid_token", "The token is not valid.")
    principal = principals.get(hash_token(token))
    if principal is None:
        raise AuthenticationError("invalid_token", "The token is not valid.")
    return principal


class AuthenticationError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

"""The Stripe outbox: every intended Stripe write is recorded before it is sent.

An intent's ``idempotency_key`` is derived from what it bills (the slot and its revision), so
recording the same intent twice is a no-op and recording a *different* payload under the same key
is an error, not an overwrite. The sender drains ``pending`` intents; a write Stripe rejects as
invalid goes to ``dead`` with the error, for a person to look at.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

SCHEMA_SQL = """
create schema if not exists stripe_sync;
create table if not exists stripe_sync.outbox (
    id bigserial primary key,
    idempotency_key text not null unique,
    operation text not null,
    slot_id text not null,
    revision integer not null check (revision >= 1),
    quantity_delta bigint not null,
    request_payload jsonb not null,
    payload_hash text not null,
    state text not null default 'pending' check (state in ('pending', 'sent', 'dead')),
    attempts integer not null default 0,
    last_error text,
    stripe_object_id text,
    created_at timestamptz not null default now(),
    sent_at timestamptz,
    unique (operation, slot_id, revision)
);
"""


class OutboxConflictError(RuntimeError):
    """The same idempotency key was recorded before with a different payload."""


@dataclass(frozen=True)
class OutboxIntent:
    idempotency_key: str
    operation: str
    slot_id: str
    revision: int
    quantity_delta: int
    request_payload: Mapping[str, Any]

    @property
    def payload_hash(self) -> str:
        canonical = json.dumps(self.request_payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class PendingWrite:
    id: int
    idempotency_key: str
    operation: str
    request_payload: dict[str, Any]
    attempts: int


@dataclass(frozen=True)
class SlotTotal:
    revisions: int
    quantity: int


def ensure_schema(conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('stripe_sync.outbox'))")
        conn.execute(SCHEMA_SQL)


def slot_totals(conn: psycopg.Connection, operation: str) -> dict[str, SlotTotal]:
    """Revisions and quantity recorded per slot (pending, sent or dead alike)."""
    rows = conn.execute(
        "select slot_id, max(revision), sum(quantity_delta) from stripe_sync.outbox "
        "where operation = %s group by slot_id",
        [operation],
    ).fetchall()
    return {slot: SlotTotal(revisions=int(rev), quantity=int(qty)) for slot, rev, qty in rows}


def record_intents(conn: psycopg.Connection, intents: Iterable[OutboxIntent]) -> int:
    """Record intents in one transaction; returns how many were new."""
    created = 0
    with conn.transaction():
        for intent in intents:
            row = conn.execute(
                """
                insert into stripe_sync.outbox (idempotency_key, operation, slot_id, revision,
                    quantity_delta, request_payload, payload_hash)
                values (%s, %s, %s, %s, %s, %s, %s)
                on conflict (idempotency_key) do nothing
                returning id
                """,
                [
                    intent.idempotency_key,
                    intent.operation,
                    intent.slot_id,
                    intent.revision,
                    intent.quantity_delta,
                    json.dumps(dict(intent.request_payload)),
                    intent.payload_hash,
                ],
            ).fetchone()
            if row is not None:
                created += 1
                continue
            existing = conn.execute(
                "select payload_hash from stripe_sync.outbox where idempotency_key = %s",
                [intent.idempotency_key],
            ).fetchone()
            if existing is None or existing[0] != intent.payload_hash:
                raise OutboxConflictError(
                    f"Outbox key {intent.idempotency_key} was recorded before with a different "
                    "payload; the rating of that slot changed under the same revision. Inspect "
                    "stripe_sync.outbox for the slot; nothing was recorded."
                )
    return created


def pending_writes(conn: psycopg.Connection, operation: str) -> list[PendingWrite]:
    rows = conn.execute(
        "select id, idempotency_key, operation, request_payload, attempts "
        "from stripe_sync.outbox where state = 'pending' and operation = %s order by id",
        [operation],
    ).fetchall()
    return [PendingWrite(*row) for row in rows]


@dataclass(frozen=True)
class WriteOutcome:
    """What happened to one pending write: ``sent``, ``dead`` or still ``pending``."""

    write_id: int
    state: str
    attempts: int
    object_id: str | None
    error: str | None


def record_outcomes(conn: psycopg.Connection, outcomes: list[WriteOutcome]) -> None:
    """Write the outcomes of a batch of sends in one transaction."""
    if not outcomes:
        return
    with conn.transaction(), conn.cursor() as cursor:
        cursor.executemany(
            """
            update stripe_sync.outbox set state = %s, attempts = attempts + %s,
                stripe_object_id = coalesce(%s, stripe_object_id), last_error = %s,
                sent_at = case when %s = 'sent' then now() else sent_at end
            where id = %s
            """,
            [
                (
                    o.state,
                    o.attempts,
                    o.object_id,
                    (o.error or "")[:2000] or None,
                    o.state,
                    o.write_id,
                )
                for o in outcomes
            ],
        )


def state_counts(conn: psycopg.Connection) -> dict[str, int]:
    rows = conn.execute("select state, count(*) from stripe_sync.outbox group by state").fetchall()
    return {state: int(count) for state, count in rows}


@dataclass(frozen=True)
class ProblemWrite:
    """A write a person may need to look at: dead (Stripe refused it) or pending after errors."""

    idempotency_key: str
    operation: str
    slot_id: str
    revision: int
    state: str
    attempts: int
    last_error: str | None


def problem_writes(conn: psycopg.Connection, limit: int = 100) -> list[ProblemWrite]:
    """Dead letters first, then pending writes that have failed before; oldest first."""
    rows = conn.execute(
        """
        select idempotency_key, operation, slot_id, revision, state, attempts, last_error
        from stripe_sync.outbox
        where state = 'dead' or (state = 'pending' and attempts > 0)
        order by state = 'dead' desc, id
        limit %s
        """,
        [limit],
    ).fetchall()
    return [ProblemWrite(*row) for row in rows]

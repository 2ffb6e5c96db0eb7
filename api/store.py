"""The API's own records in the ledger's PostgreSQL (schema ``api``), written in the same
database transaction as the ledger postings they cause:

- ``api.idempotency_keys``: each write's Idempotency-Key, a hash of the request and the response
  it got. The row is inserted first, so a concurrent request with the same key waits on it and
  then replays the committed response (or gets a 409 for another request under that key).
- ``api.credit_grants``: a grant's terms (expiry, priority, metrics) and its approval state; the
  ledger holds its money once it is approved.
- ``api.audit_log``: who did what, when, why and in which request; append-only.

The ledger's ``Ledger`` opens its database transactions with ``conn.transaction()``, which inside
an open transaction is a savepoint: posting through it here makes the ledger entries, the grant,
the audit record and the idempotency record one atomic commit.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from api.auth import Principal
from api.errors import ApiError

SCHEMA_SQL = """
create schema if not exists api;
create table if not exists api.idempotency_keys (
    idempotency_key text primary key,
    principal text not null,
    request_hash text not null,
    method text not null,
    path text not null,
    request_id text not null,
    status_code integer,
    response jsonb,
    created_at timestamptz not null default now()
);
create table if not exists api.credit_grants (
    grant_id text primary key,
    customer_id text not null,
    credit_kind text not null check (credit_kind in ('promotional', 'prepaid')),
    amount_minor numeric(38, 12) not null check (amount_minor > 0),
    currency text not null check (currency ~ '^[a-z]{3}$'),
    reason text not null,
    expires_at timestamptz,
    priority integer not null,
    metrics text[] not null,
    status text not null check (status in ('pending_approval', 'approved')),
    requested_by text not null,
    requested_at timestamptz not null,
    approved_by text,
    approved_at timestamptz,
    ledger_transaction_key text,
    request_id text not null,
    check ((status = 'approved')
        = (approved_by is not null and ledger_transaction_key is not null)),
    check (approved_by is distinct from requested_by or amount_minor <= approval_threshold_minor),
    approval_threshold_minor numeric(38, 12) not null
);
create index if not exists credit_grants_customer on api.credit_grants (customer_id);
create table if not exists api.audit_log (
    id bigserial primary key,
    recorded_at timestamptz not null default now(),
    request_id text not null,
    principal text not null,
    role text not null,
    action text not null,
    customer_id text not null,
    subject_id text not null,
    reason text not null,
    idempotency_key text,
    ledger_transaction_key text,
    detail jsonb not null
);
create index if not exists audit_log_customer on api.audit_log (customer_id, recorded_at);
create or replace function api.refuse_change() returns trigger language plpgsql as $$
begin
    raise exception 'api.audit_log is append-only: % is not allowed', tg_op using errcode = 'P0001';
end
$$;
create or replace trigger audit_log_append_only before update or delete or truncate
    on api.audit_log for each statement execute function api.refuse_change();
"""

MAX_PAGE_SIZE = 500


def ensure_schema(conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('meterbook.api.schema'))")
        conn.execute(SCHEMA_SQL)  # type: ignore[arg-type]


def request_hash(*, method: str, path: str, principal: Principal, body: Mapping[str, Any]) -> str:
    """What makes two requests under one Idempotency-Key the same request."""
    text = json.dumps(
        {"method": method, "path": path, "principal": principal.name, "body": body},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    body: dict[str, Any]


def claim_idempotency_key(
    conn: psycopg.Connection,
    *,
    key: str,
    principal: Principal,
    fingerprint: str,
    method: str,
    path: str,
    request_id: str,
) -> StoredResponse | None:
    """Inside an open transaction: None if this request owns ``key`` now (its row stays locked
    until commit), else the response the first request under it got. Another request under the
    same key is a 409."""
    inserted = conn.execute(
        "insert into api.idempotency_keys (idempotency_key, principal, request_hash, method, "
        "path, request_id) values (%s, %s, %s, %s, %s, %s) "
        "on conflict (idempotency_key) do nothing returning 1",
        [key, principal.name, fingerprint, method, path, request_id],
    ).fetchone()
    if inserted is not None:
        return None
    stored = conn.execute(
        "select request_hash, status_code, response, request_id from api.idempotency_keys "
        "where idempotency_key = %s",
        [key],
    ).fetchone()
    assert stored is not None  # rows are never deleted
    if stored[0] != fingerprint:
        raise ApiError(
            409,
            "idempotency_key_reused",
            f"Idempotency-Key {key!r} was used by request {stored[3]} for another request (other "
            "body, path or caller); use a new key for a new request. Nothing was written.",
        )
    return StoredResponse(status_code=int(stored[1]), body=stored[2])


def record_response(
    conn: psycopg.Connection, *, key: str, status_code: int, body: Mapping[str, Any]
) -> None:
    conn.execute(
        "update api.idempotency_keys set status_code = %s, response = %s "
        "where idempotency_key = %s",
        [status_code, Jsonb(dict(body)), key],
    )


def audit(
    conn: psycopg.Connection,
    *,
    request_id: str,
    principal: Principal,
    action: str,
    customer_id: str,
    subject_id: str,
    reason: str,
    detail: Mapping[str, Any],
    idempotency_key: str | None = None,
    ledger_transaction_key: str | None = None,
) -> None:
    conn.execute(
        "insert into api.audit_log (request_id, principal, role, action, customer_id, "
        "subject_id, reason, idempotency_key, ledger_transaction_key, detail) "
        "values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [
            request_id,
            principal.name,
            principal.role.value,
            action,
            customer_id,
            subject_id,
            reason,
            idempotency_key,
            ledger_transaction_key,
            Jsonb(dict(detail)),
        ],
    )


GRANT_COLUMNS = (
    "grant_id, customer_id, credit_kind, amount_minor, currency, reason, expires_at, priority, "
    "metrics, status, requested_by, requested_at, approved_by, approved_at, "
    "ledger_transaction_key, request_id"
)


def grant_from_row(row: tuple[Any, ...]) -> dict[str, Any]:
    names = [name.strip() for name in GRANT_COLUMNS.split(",")]
    grant = dict(zip(names, row, strict=True))
    grant["kind"] = grant.pop("credit_kind")
    grant["amount_minor"] = Decimal(grant["amount_minor"])
    return grant


def insert_grant(conn: psycopg.Connection, grant: Mapping[str, Any], threshold: Decimal) -> None:
    conn.execute(
        f"insert into api.credit_grants ({GRANT_COLUMNS}, approval_threshold_minor) "
        "values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [
            grant["grant_id"],
            grant["customer_id"],
            grant["kind"],
            grant["amount_minor"],
            grant["currency"],
            grant["reason"],
            grant["expires_at"],
            grant["priority"],
            list(grant["metrics"]),
            grant["status"],
            grant["requested_by"],
            grant["requested_at"],
            grant["approved_by"],
            grant["approved_at"],
            grant["ledger_transaction_key"],
            grant["request_id"],
            threshold,
        ],
    )


def grant_for_update(conn: psycopg.Connection, customer_id: str, grant_id: str) -> dict[str, Any]:
    row = conn.execute(
        f"select {GRANT_COLUMNS} from api.credit_grants where grant_id = %s and customer_id = %s "
        "for update",
        [grant_id, customer_id],
    ).fetchone()
    if row is None:
        raise ApiError(
            404, "unknown_grant", f"Customer {customer_id} has no credit grant {grant_id!r}."
        )
    return grant_from_row(row)


def mark_approved(
    conn: psycopg.Connection,
    *,
    grant_id: str,
    approved_by: str,
    approved_at: datetime,
    ledger_transaction_key: str,
) -> None:
    conn.execute(
        "update api.credit_grants set status = 'approved', approved_by = %s, approved_at = %s, "
        "ledger_transaction_key = %s where grant_id = %s",
        [approved_by, approved_at, ledger_transaction_key, grant_id],
    )


def customer_grants(conn: psycopg.Connection, customer_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        f"select {GRANT_COLUMNS} from api.credit_grants where customer_id = %s "
        "order by requested_at, grant_id",
        [customer_id],
    ).fetchall()
    return [grant_from_row(row) for row in rows]


def encode_cursor(effective_at: datetime, transaction_id: int) -> str:
    text = f"{effective_at.isoformat()}|{transaction_id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        moment, _, number = base64.urlsafe_b64decode(padded.encode()).decode().partition("|")
        return datetime.fromisoformat(moment), int(number)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(
            422, "invalid_cursor", "The cursor is not one this API gave out; start again."
        ) from None


def ledger_page(
    conn: psycopg.Connection,
    *,
    customer_id: str,
    start: datetime | None,
    end: datetime | None,
    after: tuple[datetime, int] | None,
    limit: int,
) -> tuple[datetime, list[dict[str, Any]], tuple[datetime, int] | None]:
    """The customer's transactions effective in [start, end), oldest first, after the cursor;
    with every entry of each (both sides), in one snapshot. Returns (as of, page, next cursor)."""
    with conn.transaction():
        conn.execute("set transaction isolation level repeatable read, read only")
        as_of_row = conn.execute("select now()").fetchone()
        assert as_of_row is not None
        rows = conn.execute(
            """
            with customer_accounts as (
                select name from ledger.accounts where starts_with(name, %(prefix)s)
            ), page as (
                select t.id, t.transaction_key, t.kind, t.cause_type, t.cause_id, t.effective_at,
                    t.posted_at, t.metadata, t.reverses_id
                from ledger.transactions t
                where t.id in (
                    select e.transaction_id from ledger.entries e
                    where e.account in (select name from customer_accounts)
                )
                    and (%(start)s::timestamptz is null or t.effective_at >= %(start)s)
                    and (%(end)s::timestamptz is null or t.effective_at < %(end)s)
                    and (%(after_at)s::timestamptz is null
                        or (t.effective_at, t.id) > (%(after_at)s, %(after_id)s::bigint))
                order by t.effective_at, t.id
                limit %(limit)s
            )
            select p.id, p.transaction_key, p.kind, p.cause_type, p.cause_id, p.effective_at,
                p.posted_at, p.metadata, r.transaction_key, e.account, e.amount_minor, e.currency
            from page p
            join ledger.entries e on e.transaction_id = p.id
            left join ledger.transactions r on r.id = p.reverses_id
            order by p.effective_at, p.id, e.id
            """,
            {
                "prefix": f"customer:{customer_id}:",
                "start": start,
                "end": end,
                "after_at": after[0] if after else None,
                "after_id": after[1] if after else None,
                "limit": limit + 1,
            },
        ).fetchall()
    transactions: dict[int, dict[str, Any]] = {}
    for row in rows:
        transaction = transactions.setdefault(
            row[0],
            {
                "id": row[0],
                "transaction_key": row[1],
                "kind": row[2],
                "cause_type": row[3],
                "cause_id": row[4],
                "effective_at": row[5],
                "posted_at": row[6],
                "metadata": row[7],
                "reverses": row[8],
                "entries": [],
            },
        )
        transaction["entries"].append(
            {"account": row[9], "amount_minor": Decimal(row[10]), "currency": row[11]}
        )
    page = list(transactions.values())
    following = None
    if len(page) > limit:
        page = page[:limit]
        following = (page[-1]["effective_at"], page[-1]["id"])
    return as_of_row[0], page, following

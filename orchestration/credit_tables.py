"""Credit grants and what they paid, in the warehouse (``billing.credit_*``): the approved
grants, copied from the billing API's database before the rating so that dbt can say which
grants may pay for which slot (``int_credit_grant_slots``); the rated charges and that order,
which the allocation reads; and the allocation written back for the finance marts.

The allocation covers all of a grant holder's rated days (a grant's balance depends on every
day before), so each run replaces the tables whole; they are small (customers with grants
only).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from decimal import Decimal

import duckdb
import pandas as pd

from ledger.credit_applications import LedgerGrant, ledger_grant_from_row
from pricing.credits import CreditAllocation, SlotKey, UsageCharge

SCHEMA_SQL = """
create schema if not exists billing;
create table if not exists billing.credit_grants (
    grant_id varchar primary key,
    customer_id varchar not null,
    credit_kind varchar not null,
    currency varchar not null,
    amount_minor decimal(38, 12) not null,
    effective_at timestamptz not null,
    expires_at timestamptz,
    priority integer not null,
    meters varchar[] not null
);
create table if not exists billing.credit_applications (
    grant_id varchar not null,
    customer_id varchar not null,
    meter_id varchar not null,
    usage_date date not null,
    billing_period_start_date date not null,
    currency varchar not null,
    amount_minor decimal(38, 12) not null,
    primary key (grant_id, customer_id, meter_id, usage_date)
);
create table if not exists billing.credit_expiries (
    grant_id varchar primary key,
    customer_id varchar not null,
    currency varchar not null,
    expires_at timestamptz not null,
    remaining_minor decimal(38, 12) not null
);
"""


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(SCHEMA_SQL)


def usage_charges(
    conn: duckdb.DuckDBPyConnection, customer_ids: Iterable[str]
) -> tuple[list[UsageCharge], date | None]:
    """Every rated day of those customers, and the last usage date rated for anyone."""
    customers = sorted(set(customer_ids))
    rows = conn.execute(
        """
        select customer_id, meter_id, usage_date, billing_period_start_date, currency,
               amount_minor_exact
        from billable_usage_daily
        where is_priced and customer_id in (select unnest(?::varchar[]))
        """,
        [customers],
    ).fetchall()
    (rated_through,) = conn.execute(
        "select max(usage_date) from billable_usage_daily where is_priced"
    ).fetchone() or (None,)
    return [
        UsageCharge(customer, meter, day, period, currency, Decimal(amount))
        for customer, meter, day, period, currency, amount in rows
    ], rated_through


# Each table's columns, with the SQL that casts the staged text back (exact, no float on the way).
GRANT_COLUMNS = {
    "grant_id": "grant_id",
    "customer_id": "customer_id",
    "credit_kind": "credit_kind",
    "currency": "currency",
    "amount_minor": "cast(amount_minor as decimal(38, 12))",
    "effective_at": "cast(effective_at as timestamptz)",
    "expires_at": "cast(expires_at as timestamptz)",
    "priority": "cast(priority as integer)",
    "meters": "case when meters = '' then []::varchar[] else string_split(meters, ',') end",
}
APPLICATION_COLUMNS = {
    "grant_id": "grant_id",
    "customer_id": "customer_id",
    "meter_id": "meter_id",
    "usage_date": "cast(usage_date as date)",
    "billing_period_start_date": "cast(billing_period_start_date as date)",
    "currency": "currency",
    "amount_minor": "cast(amount_minor as decimal(38, 12))",
}
EXPIRY_COLUMNS = {
    "grant_id": "grant_id",
    "customer_id": "customer_id",
    "currency": "currency",
    "expires_at": "cast(expires_at as timestamptz)",
    "remaining_minor": "cast(remaining_minor as decimal(38, 12))",
}


def write_grants(conn: duckdb.DuckDBPyConnection, grants: Iterable[LedgerGrant]) -> int:
    """Replace ``billing.credit_grants`` with these grants; returns the rows written."""
    ensure_schema(conn)
    grant_rows = [
        (
            g.terms.grant_id,
            g.terms.customer_id,
            g.credit_kind.value,
            g.terms.currency,
            format(g.terms.amount_minor, "f"),
            g.terms.effective_at.isoformat(),
            g.terms.expires_at.isoformat() if g.terms.expires_at else None,
            g.terms.priority,
            ",".join(sorted(g.terms.meters)),
        )
        for g in grants
    ]
    conn.execute("begin")
    written = _replace_table(conn, "billing.credit_grants", GRANT_COLUMNS, grant_rows)
    conn.execute("commit")
    return written


def read_grants(conn: duckdb.DuckDBPyConnection) -> list[LedgerGrant]:
    """The grants ``write_grants`` copied (none before the first copy)."""
    (copied,) = conn.execute(
        "select count(*) from information_schema.tables "
        "where table_schema = 'billing' and table_name = 'credit_grants'"
    ).fetchone() or (0,)
    if not copied:
        return []
    rows = conn.execute(
        "select grant_id, customer_id, credit_kind, currency, amount_minor, effective_at, "
        "expires_at, priority, meters from billing.credit_grants order by grant_id"
    ).fetchall()
    return [ledger_grant_from_row(row) for row in rows]


def spending_orders(conn: duckdb.DuckDBPyConnection) -> dict[SlotKey, tuple[str, ...]]:
    """Per rated slot of a grant holder, the grants that may pay for it in the order they are
    drawn down, as dbt's ``int_credit_grant_slots`` says."""
    rows = conn.execute(
        "select customer_id, meter_id, usage_date, list(grant_id order by spending_rank) "
        "from int_credit_grant_slots group by all"
    ).fetchall()
    return {(customer, meter, day): tuple(order) for customer, meter, day, order in rows}


def write_allocation(conn: duckdb.DuckDBPyConnection, allocation: CreditAllocation) -> int:
    """Replace the applications and expiries with this allocation, in one transaction;
    returns the rows written."""
    ensure_schema(conn)
    application_rows = [
        (
            a.grant_id,
            a.customer_id,
            a.meter_id,
            a.usage_date.isoformat(),
            a.billing_period_start_date.isoformat(),
            a.currency,
            format(a.amount_minor, "f"),
        )
        for a in allocation.applications
    ]
    expiry_rows = [
        (
            e.grant_id,
            e.customer_id,
            e.currency,
            e.expires_at.isoformat(),
            format(e.remaining_minor, "f"),
        )
        for e in allocation.expiries
    ]
    conn.execute("begin")
    written = _replace_table(
        conn, "billing.credit_applications", APPLICATION_COLUMNS, application_rows
    ) + _replace_table(conn, "billing.credit_expiries", EXPIRY_COLUMNS, expiry_rows)
    conn.execute("commit")
    return written


def _replace_table(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    columns: dict[str, str],
    rows: list[tuple[object, ...]],
) -> int:
    """Replace ``table``'s rows with ``rows`` (text, cast back by ``columns``), as one
    columnar insert (DuckDB's executemany binds a row at a time)."""
    staged = pd.DataFrame(rows, columns=list(columns), dtype=object)
    conn.register("staged_rows", staged)
    try:
        conn.execute(f"delete from {table}")
        conn.execute(f"insert into {table} select {', '.join(columns.values())} from staged_rows")
    finally:
        conn.unregister("staged_rows")
    return len(staged)

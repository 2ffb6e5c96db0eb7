"""Credit grants and what they paid, in the warehouse: the rated charges the allocation reads,
and the allocation written back for the finance marts (``billing.credit_*``).

The allocation covers all of a grant holder's rated days (a grant's balance depends on every
day before), so each run replaces the three tables whole; they are small (customers with
grants only).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from decimal import Decimal

import duckdb
import pandas as pd

from ledger.credit_applications import LedgerGrant
from pricing.credits import CreditAllocation, UsageCharge

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


def write_allocation(
    conn: duckdb.DuckDBPyConnection, grants: Iterable[LedgerGrant], allocation: CreditAllocation
) -> int:
    """Replace the three tables with these grants and their allocation; rows written."""
    ensure_schema(conn)
    grant_rows = pd.DataFrame(
        [
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
        ],
        columns=[
            "grant_id",
            "customer_id",
            "credit_kind",
            "currency",
            "amount_minor",
            "effective_at",
            "expires_at",
            "priority",
            "meters",
        ],
        dtype=object,
    )
    application_rows = pd.DataFrame(
        [
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
        ],
        columns=[
            "grant_id",
            "customer_id",
            "meter_id",
            "usage_date",
            "billing_period_start_date",
            "currency",
            "amount_minor",
        ],
        dtype=object,
    )
    expiry_rows = pd.DataFrame(
        [
            (
                e.grant_id,
                e.customer_id,
                e.currency,
                e.expires_at.isoformat(),
                format(e.remaining_minor, "f"),
            )
            for e in allocation.expiries
        ],
        columns=["grant_id", "customer_id", "currency", "expires_at", "remaining_minor"],
        dtype=object,
    )
    conn.register("grant_rows", grant_rows)
    conn.register("application_rows", application_rows)
    conn.register("expiry_rows", expiry_rows)
    conn.execute("begin")
    conn.execute("delete from billing.credit_grants")
    conn.execute("delete from billing.credit_applications")
    conn.execute("delete from billing.credit_expiries")
    conn.execute(
        """
        insert into billing.credit_grants
        select grant_id, customer_id, credit_kind, currency,
               cast(amount_minor as decimal(38, 12)), cast(effective_at as timestamptz),
               cast(expires_at as timestamptz), cast(priority as integer),
               case when meters = '' then []::varchar[] else string_split(meters, ',') end
        from grant_rows
        """
    )
    conn.execute(
        """
        insert into billing.credit_applications
        select grant_id, customer_id, meter_id, cast(usage_date as date),
               cast(billing_period_start_date as date), currency,
               cast(amount_minor as decimal(38, 12))
        from application_rows
        """
    )
    conn.execute(
        """
        insert into billing.credit_expiries
        select grant_id, customer_id, currency, cast(expires_at as timestamptz),
               cast(remaining_minor as decimal(38, 12))
        from expiry_rows
        """
    )
    conn.execute("commit")
    for name in ("grant_rows", "application_rows", "expiry_rows"):
        conn.unregister(name)
    return len(grant_rows) + len(application_rows) + len(expiry_rows)

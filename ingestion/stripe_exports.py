"""Load Stripe CSV exports into the warehouse's ``stripe_raw`` schema, as exported.

Columns keep Stripe's names and arrive as text; dbt's staging models cast them. Loading replaces
each table whole, so a re-run is harmless and a later export supersedes an earlier one.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

STRIPE_EXPORT_TABLES: dict[str, tuple[str, ...]] = {
    "customers": ("id", "email", "name", "currency", "created", "metadata"),
    "products": ("id", "name", "active", "created", "metadata"),
    "prices": (
        "id",
        "product",
        "currency",
        "unit_amount",
        "unit_amount_decimal",
        "billing_scheme",
        "recurring_interval",
        "recurring_usage_type",
        "lookup_key",
        "active",
        "created",
    ),
    "subscriptions": (
        "id",
        "customer",
        "status",
        "currency",
        "created",
        "start_date",
        "current_period_start",
        "current_period_end",
        "canceled_at",
        "ended_at",
        "metadata",
    ),
    "subscription_items": ("id", "subscription", "price", "quantity", "created"),
}
# Columns an export may lack (an older export, a hand-written fixture): they load as empty.
# A subscription's ``billing_cycle_anchor`` decides its customer's billing periods; without one
# they are calendar months (docs/pricing.md, *Billing periods*).
STRIPE_OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "subscriptions": ("billing_cycle_anchor",),
}
# Prices may also carry Stripe's fields of tiered and package prices (``tiers`` and
# ``transform_quantity`` as JSON); the loader keeps the columns above and ignores these.
STRIPE_PRICE_EXTRA_COLUMNS: tuple[str, ...] = ("tiers_mode", "tiers", "transform_quantity")
# Invoices come back from Stripe for reconciliation; until the first period closes there are
# none, so a missing file loads as an empty table.
STRIPE_INVOICE_TABLES: dict[str, tuple[str, ...]] = {
    "invoices": (
        "id",
        "customer",
        "subscription",
        "status",
        "currency",
        "total",
        "amount_due",
        "amount_paid",
        "amount_remaining",
        "attempt_count",
        "period_start",
        "period_end",
        "created",
    ),
    "invoice_line_items": (
        "id",
        "invoice",
        "subscription_item",
        "price",
        "quantity",
        "amount",
        "currency",
        "period_start",
        "period_end",
    ),
}


class StripeExportError(ValueError):
    """An export file is missing or does not have Stripe's columns."""


def load_stripe_exports(conn: duckdb.DuckDBPyConnection, *, stripe_dir: Path) -> dict[str, int]:
    """Replace ``stripe_raw.<table>`` from ``<stripe_dir>/<table>.csv``; return row counts."""
    row_counts: dict[str, int] = {}
    conn.execute("begin transaction")
    try:
        conn.execute("create schema if not exists stripe_raw")
        for table, columns in STRIPE_EXPORT_TABLES.items():
            path = stripe_dir / f"{table}.csv"
            if not path.exists():
                raise StripeExportError(
                    f"Stripe export {path} is missing. Export '{table}' from Stripe (or run "
                    "`meterbook generate`) so that it lies there."
                )
            relation = conn.read_csv(str(path), header=True, all_varchar=True)
            missing = [c for c in columns if c not in relation.columns]
            if missing:
                raise StripeExportError(
                    f"Stripe export {path} lacks the columns {missing}; expected Stripe's "
                    f"field names {list(columns)}."
                )
            column_list = ", ".join(
                [f'"{c}"' for c in columns]
                + [
                    f'"{c}"' if c in relation.columns else f'cast(null as varchar) as "{c}"'
                    for c in STRIPE_OPTIONAL_COLUMNS.get(table, ())
                ]
            )
            conn.execute(
                f"create or replace table stripe_raw.{table} as "
                f"select {column_list} from read_csv(?, header=true, all_varchar=true)",
                [str(path)],
            )
            count = conn.execute(f"select count(*) from stripe_raw.{table}").fetchone()
            row_counts[table] = int(count[0]) if count else 0
        for table, columns in STRIPE_INVOICE_TABLES.items():
            path = stripe_dir / f"{table}.csv"
            column_list = ", ".join(f'"{c}"' for c in columns)
            if path.exists():
                conn.execute(
                    f"create or replace table stripe_raw.{table} as "
                    f"select {column_list} from read_csv(?, header=true, all_varchar=true)",
                    [str(path)],
                )
            else:
                conn.execute(
                    f"create or replace table stripe_raw.{table} ("
                    + ", ".join(f'"{c}" varchar' for c in columns)
                    + ")"
                )
            count = conn.execute(f"select count(*) from stripe_raw.{table}").fetchone()
            row_counts[table] = int(count[0]) if count else 0
        conn.execute("commit")
    except BaseException:
        conn.execute("rollback")
        raise
    return row_counts

"""The outbox's per-slot totals in the warehouse, so finance can check what reached Stripe.

The outbox's rows change state (pending -> sent | dead), so they are not copied incrementally:
each copy replaces the per-slot totals, which stay small (one row per customer, meter and day).
"""

from __future__ import annotations

import duckdb
import polars as pl
import psycopg

REPLICA_SQL = """
create schema if not exists stripe_sync;
create table if not exists stripe_sync.outbox_slots (
    operation varchar not null, slot_id varchar not null, revisions integer not null,
    quantity_sent bigint not null, quantity_pending bigint not null, quantity_dead bigint not null,
    primary key (operation, slot_id)
);
"""

TOTALS_SQL = """
select operation, slot_id, max(revision),
    coalesce(sum(quantity_delta) filter (where state = 'sent'), 0),
    coalesce(sum(quantity_delta) filter (where state = 'pending'), 0),
    coalesce(sum(quantity_delta) filter (where state = 'dead'), 0)
from stripe_sync.outbox group by operation, slot_id
"""


def copy_outbox_slot_totals(pg: psycopg.Connection, warehouse: duckdb.DuckDBPyConnection) -> int:
    """Replace the warehouse's ``stripe_sync.outbox_slots``; returns the number of slots."""
    exists = pg.execute("select to_regclass('stripe_sync.outbox') is not null").fetchone()
    rows = pg.execute(TOTALS_SQL).fetchall() if exists and exists[0] else []
    warehouse.execute(REPLICA_SQL)
    warehouse.execute("begin transaction")
    try:
        warehouse.execute("delete from stripe_sync.outbox_slots")
        if rows:
            totals = pl.DataFrame(
                rows,
                schema={
                    "operation": pl.String,
                    "slot_id": pl.String,
                    "revisions": pl.Int32,
                    "quantity_sent": pl.Int64,
                    "quantity_pending": pl.Int64,
                    "quantity_dead": pl.Int64,
                },
                orient="row",
            )
            warehouse.register("outbox_slot_rows", totals)
            warehouse.execute("insert into stripe_sync.outbox_slots select * from outbox_slot_rows")
            warehouse.unregister("outbox_slot_rows")
        warehouse.execute("commit")
    except BaseException:
        warehouse.execute("rollback")
        raise
    return len(rows)

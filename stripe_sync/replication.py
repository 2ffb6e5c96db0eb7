"""The outbox's per-slot totals in the warehouse, so finance can check what reached Stripe.

The outbox's rows change state (pending -> sent | dead), so they are not copied incrementally:
each copy replaces the per-slot totals, which stay small (one row per customer, meter and day).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import duckdb
import psycopg

REPLICA_SQL = """
create schema if not exists stripe_sync;
create or replace table stripe_sync.outbox_slots (
    operation varchar not null, slot_id varchar not null, revisions integer not null,
    quantity_sent bigint not null, quantity_pending bigint not null, quantity_dead bigint not null,
    first_sent_at timestamptz, last_sent_at timestamptz,
    primary key (operation, slot_id)
);
"""

TOTALS_SQL = """
select operation, slot_id, max(revision),
    coalesce(sum(quantity_delta) filter (where state = 'sent'), 0),
    coalesce(sum(quantity_delta) filter (where state = 'pending'), 0),
    coalesce(sum(quantity_delta) filter (where state = 'dead'), 0),
    min(sent_at), max(sent_at)
from stripe_sync.outbox group by operation, slot_id
"""


def copy_outbox_slot_totals(pg: psycopg.Connection, warehouse: duckdb.DuckDBPyConnection) -> int:
    """Replace the warehouse's ``stripe_sync.outbox_slots``; returns the number of slots."""
    exists = pg.execute("select to_regclass('stripe_sync.outbox') is not null").fetchone()
    with tempfile.TemporaryDirectory(prefix="outbox_slots_") as scratch:
        path = Path(scratch) / "outbox_slots.csv"
        slots = 0
        if exists and exists[0]:
            with path.open("wb") as out, pg.cursor() as cursor:
                with cursor.copy(f"copy ({TOTALS_SQL}) to stdout (format csv)") as copy:
                    for block in copy:
                        out.write(block)
                slots = max(cursor.rowcount, 0)
        warehouse.execute("begin transaction")
        try:
            warehouse.execute(REPLICA_SQL)  # replaced whole: the copy is never incremental
            if slots:
                warehouse.execute(
                    "insert into stripe_sync.outbox_slots select * from read_csv(?, header = "
                    "false, columns = {'operation': 'VARCHAR', 'slot_id': 'VARCHAR', "
                    "'revisions': 'INTEGER', 'quantity_sent': 'BIGINT', "
                    "'quantity_pending': 'BIGINT', 'quantity_dead': 'BIGINT', "
                    "'first_sent_at': 'TIMESTAMPTZ', 'last_sent_at': 'TIMESTAMPTZ'})",
                    [str(path)],
                )
            warehouse.execute("commit")
        except BaseException:
            warehouse.execute("rollback")
            raise
    return slots

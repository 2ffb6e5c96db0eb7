"""Incremental replication of the ledger (PostgreSQL) into the warehouse (DuckDB) for finance marts.

The ledger is append-only and its ids only grow, so a copy needs only the rows above the
replica's highest id. Ids are handed out before their transactions commit, though: a writer
that took id 10 may commit after one that took id 11. The copy therefore first takes a SHARE
lock on the ledger's tables for an instant: it waits for every open posting to finish and lets
none start, reads the highest id, and releases. Every id up to that mark is then final.

The replica's own content is its watermark, and each copy is one DuckDB transaction, so a
crash at any point is followed by a copy that picks up exactly where the last commit left off.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb
import psycopg

from crash_points import crash_point

REPLICA_SCHEMA = """
create schema if not exists ledger;
create table if not exists ledger.transactions (
    id bigint primary key, transaction_key varchar not null, kind varchar not null,
    cause_type varchar not null, cause_id varchar not null, effective_at timestamptz not null,
    posted_at timestamptz not null, content_hash varchar not null, reverses_id bigint,
    metadata json not null
);
create table if not exists ledger.entries (
    id bigint primary key, transaction_id bigint not null, account varchar not null,
    amount_minor decimal(38, 12) not null, currency varchar not null
);
create table if not exists ledger.accounts (
    name varchar primary key, currency varchar not null, normal_side varchar not null,
    must_not_go_negative boolean not null
);
create table if not exists ledger.dunning_events (
    id bigint primary key, event_key varchar not null, invoice_id varchar not null,
    customer_id varchar not null, state varchar not null, attempt integer not null,
    occurred_at timestamptz not null, recorded_at timestamptz not null, detail json not null
);
"""

# Each copy: the columns read from PostgreSQL, in the replica's column order.
TRANSACTIONS_SQL = """
select id, transaction_key, kind, cause_type, cause_id, effective_at, posted_at, content_hash,
    reverses_id, metadata
from ledger.transactions where id > {low} and id <= {high} order by id
"""
ENTRIES_SQL = """
select id, transaction_id, account, amount_minor, currency
from ledger.entries where transaction_id > {low} and transaction_id <= {high} order by id
"""
DUNNING_SQL = """
select id, event_key, invoice_id, customer_id, state, attempt, occurred_at, recorded_at, detail
from ledger.dunning_events where id > {low} and id <= {high} order by id
"""
ACCOUNTS_SQL = "select name, currency, normal_side, must_not_go_negative from ledger.accounts"


@dataclass(frozen=True)
class ReplicationResult:
    transactions_copied: int
    entries_copied: int
    dunning_events_copied: int
    transactions_in_replica: int
    high_mark: int


def _high_marks(pg: psycopg.Connection) -> tuple[int, int]:
    """The highest transaction and dunning-event ids, once no posting is in flight."""
    with pg.transaction():
        pg.execute("lock table ledger.transactions, ledger.dunning_events in share mode")
        row = pg.execute(
            "select (select coalesce(max(id), 0) from ledger.transactions), "
            "(select coalesce(max(id), 0) from ledger.dunning_events)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _copy_out(pg: psycopg.Connection, query: str, path: Path) -> int:
    """Write the query's rows to a CSV file; returns how many."""
    rows = 0
    with path.open("wb") as out, pg.cursor() as cursor:
        with cursor.copy(f"copy ({query}) to stdout (format csv, header true)") as copy:
            for block in copy:
                out.write(block)
        rows = cursor.rowcount
    return max(rows, 0)


def replicate_ledger(
    pg: psycopg.Connection, warehouse: duckdb.DuckDBPyConnection
) -> ReplicationResult:
    """Copy every ledger row the replica lacks, in one warehouse transaction."""
    warehouse.execute(REPLICA_SCHEMA)
    low_transaction, low_dunning = warehouse.execute(
        "select (select coalesce(max(id), 0) from ledger.transactions), "
        "(select coalesce(max(id), 0) from ledger.dunning_events)"
    ).fetchone() or (0, 0)
    high_transaction, high_dunning = _high_marks(pg)
    with tempfile.TemporaryDirectory(prefix="ledger_replica_") as scratch:
        files = {
            name: Path(scratch) / f"{name}.csv"
            for name in ("transactions", "entries", "dunning_events", "accounts")
        }
        bounds = {"low": int(low_transaction), "high": high_transaction}
        counts = {
            "transactions": _copy_out(pg, TRANSACTIONS_SQL.format(**bounds), files["transactions"]),
            "entries": _copy_out(pg, ENTRIES_SQL.format(**bounds), files["entries"]),
            "dunning_events": _copy_out(
                pg,
                DUNNING_SQL.format(low=int(low_dunning), high=high_dunning),
                files["dunning_events"],
            ),
            "accounts": _copy_out(pg, ACCOUNTS_SQL, files["accounts"]),
        }
        warehouse.execute("begin transaction")
        try:
            for table in ("transactions", "entries", "dunning_events"):
                if counts[table]:
                    warehouse.execute(
                        f"insert into ledger.{table} select * from read_csv(?, header = true, "
                        f"columns = {_replica_columns(warehouse, table)})",
                        [str(files[table])],
                    )
                crash_point("ledger.replica_mid_copy")
            warehouse.execute("delete from ledger.accounts")
            if counts["accounts"]:
                warehouse.execute(
                    "insert into ledger.accounts select * from read_csv(?, header = true, "
                    f"columns = {_replica_columns(warehouse, 'accounts')})",
                    [str(files["accounts"])],
                )
            warehouse.execute("commit")
        except BaseException:
            warehouse.execute("rollback")
            raise
    (in_replica,) = warehouse.execute("select count(*) from ledger.transactions").fetchone() or (0,)
    return ReplicationResult(
        transactions_copied=counts["transactions"],
        entries_copied=counts["entries"],
        dunning_events_copied=counts["dunning_events"],
        transactions_in_replica=int(in_replica),
        high_mark=high_transaction,
    )


def _replica_columns(warehouse: duckdb.DuckDBPyConnection, table: str) -> str:
    """The replica table's columns and types as read_csv's ``columns`` struct: the CSV is read
    with exactly the replica's types (amounts as DECIMAL, never a guessed DOUBLE)."""
    rows = warehouse.execute(
        "select column_name, data_type from information_schema.columns "
        "where table_schema = 'ledger' and table_name = ? order by ordinal_position",
        [table],
    ).fetchall()
    fields = ", ".join(f"'{name}': '{data_type}'" for name, data_type in rows)
    return "{" + fields + "}"

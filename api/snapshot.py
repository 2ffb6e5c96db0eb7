"""The warehouse as the API reads it: Parquet copies of a few tables, published by the process
that writes the warehouse, after it wrote them.

Why not open ``warehouse.duckdb``: DuckDB lets one process write a database file, and a process
that opens it, even read-only, holds a lock the writer then cannot take. An API holding the
warehouse open would make the next daily run fail; the API retrying until the run ends would
leave it blind for the length of a run. So the writer publishes:

    <snapshot root>/<UTC stamp>/<table>.parquet + manifest.json     (written under a temp name,
    <snapshot root>/CURRENT                                          then renamed: atomic)

and the API reads the directory ``CURRENT`` names, with an in-memory DuckDB per request. A table
that grows with every day (the usage event lines) is one file per arrival day,
``<table>/<day>.parquet``: a day whose rows did not change since the last publication (same
count and fingerprint) is hard-linked from it instead of written again, so a daily run copies
its own days, not the whole history. It never
touches the warehouse file, so it neither blocks nor waits for a run; what it shows is as fresh
as the last publication, and every answer says when that was (``published_at``). Older
snapshots are kept a little (a reader may be on one) and then removed.

``publish_snapshot`` takes the writer's open connection: call it from the pipeline's process
(the last step of a run), or from ``meterbook api publish`` when no run is writing.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

CURRENT = "CURRENT"
MANIFEST = "manifest.json"
KEEP_SNAPSHOTS = 3

# What the API reads, by name; each is one query on the warehouse. Tables a warehouse lacks
# (a pipeline that has not built them yet) are listed as missing in the manifest.
SNAPSHOT_QUERIES: dict[str, str] = {
    "usage_event_lines": (
        "select event_id, customer_id, event_type, model, usage_date, occurred_at, received_at, "
        "arrival_date, source_file, line_number, request_kind, input_tokens, output_tokens, "
        "cache_read_tokens, tool, cost_minor, content_hash, status from ingest.usage_event_lines"
    ),
    "quarantined_usage_lines": (
        "select arrival_date, source_file, line_number, event_id, reason "
        "from ingest.quarantined_usage_lines"
    ),
    "usage_daily": "select * from int_usage_daily",
    "meter_usage_daily": "select * from int_meter_usage_daily",
    "billable_usage_daily": "select * from billable_usage_daily",
    "invoice_lines": "select * from invoice_lines",
    "customer_plan_days": "select * from int_customer_plan_days",
    "customer_billing_cycles": "select * from int_customer_billing_cycles",
    "meters": "select * from price_book_meters",
    "price_book_charge_tiers": "select * from price_book_charge_tiers",
    "customer_entitlements_daily": "select * from customer_entitlements_daily",
    "anomaly_findings": "select * from quality.anomaly_findings",
    "reconciliation_discrepancies": "select * from reconciliation_discrepancies",
    "credit_applications": "select * from billing.credit_applications",
}


# Tables published one file per arrival day (the column named), so unchanged days are reused.
DAY_PARTITIONED: dict[str, str] = {"usage_event_lines": "arrival_date"}
EMPTY_PART = "_empty.parquet"


@dataclass(frozen=True)
class PublishedSnapshot:
    path: Path
    published_at: datetime
    rows: dict[str, int]
    missing: list[str]


def publish_snapshot(
    conn: duckdb.DuckDBPyConnection, snapshot_root: Path, *, keep: int = KEEP_SNAPSHOTS
) -> PublishedSnapshot:
    """Copy the API's tables out of the warehouse ``conn`` is open on, then make that copy
    current in one rename. Returns what was published."""
    published_at = datetime.now(UTC)
    stamp = published_at.strftime("%Y%m%dT%H%M%S%fZ")
    snapshot_root.mkdir(parents=True, exist_ok=True)
    staging = snapshot_root / f".{stamp}.partial"
    staging.mkdir()
    rows: dict[str, int] = {}
    missing: list[str] = []
    fingerprints: dict[str, dict[str, str]] = {}
    previous = _current_directory(snapshot_root)
    previous_fingerprints = _manifest(previous).get("fingerprints", {}) if previous else {}
    for name, query in SNAPSHOT_QUERIES.items():
        if name in DAY_PARTITIONED:
            try:
                fingerprints[name], rows[name] = _publish_by_day(
                    conn,
                    query,
                    day_column=DAY_PARTITIONED[name],
                    target=staging / name,
                    previous=(previous / name) if previous else None,
                    previous_fingerprints=previous_fingerprints.get(name, {}),
                )
            except duckdb.CatalogException:
                missing.append(name)
            continue
        target = staging / f"{name}.parquet"
        try:
            conn.execute(f"copy ({query}) to '{target}' (format parquet, compression zstd)")
        except duckdb.CatalogException:
            missing.append(name)
            continue
        counted = conn.execute(f"select count(*) from read_parquet('{target}')").fetchone()
        rows[name] = int(counted[0]) if counted else 0
    manifest = {
        "published_at": published_at.isoformat(),
        "rows": rows,
        "missing": missing,
        "fingerprints": fingerprints,
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
    final = snapshot_root / stamp
    staging.rename(final)
    pointer = snapshot_root / f".{CURRENT}.{stamp}"
    pointer.write_text(stamp)
    os.replace(pointer, snapshot_root / CURRENT)
    _prune(snapshot_root, keep=keep, current=stamp)
    return PublishedSnapshot(path=final, published_at=published_at, rows=rows, missing=missing)


def _publish_by_day(
    conn: duckdb.DuckDBPyConnection,
    query: str,
    *,
    day_column: str,
    target: Path,
    previous: Path | None,
    previous_fingerprints: dict[str, str],
) -> tuple[dict[str, str], int]:
    """Write one Parquet file per day of ``query`` into ``target``, linking the previous
    snapshot's file of a day whose fingerprint (row count and a hash over every row) is
    unchanged. Returns the fingerprints by day and the row count."""
    days = conn.execute(
        f"select cast({day_column} as varchar), count(*), bit_xor(hash(t)) "
        f"from ({query}) t group by 1 order by 1"
    ).fetchall()
    target.mkdir()
    fingerprints = {day: f"{count}:{digest}" for day, count, digest in days}
    for day, fingerprint in fingerprints.items():
        part = target / f"{day}.parquet"
        reused = previous / part.name if previous else None
        if reused and previous_fingerprints.get(day) == fingerprint and reused.exists():
            try:
                os.link(reused, part)
                continue
            except OSError:
                pass  # another file system: write it again
        literal = "'" + day.replace("'", "''") + "'"
        conn.execute(
            f"copy (select * from ({query}) where cast({day_column} as varchar) = {literal}) "
            f"to '{part}' (format parquet, compression zstd)"
        )
    if not fingerprints:  # the view needs a file to know the columns
        conn.execute(
            f"copy (select * from ({query}) limit 0) to '{target / EMPTY_PART}' "
            "(format parquet, compression zstd)"
        )
    return fingerprints, sum(count for _, count, _ in days)


def _current_directory(snapshot_root: Path) -> Path | None:
    """The snapshot ``CURRENT`` names, or None when nothing is published (or it is gone)."""
    try:
        directory = snapshot_root / (snapshot_root / CURRENT).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return directory if directory.is_dir() else None


def _manifest(directory: Path) -> dict[str, Any]:
    """A snapshot's manifest, or {} when it is missing or unreadable."""
    try:
        return dict(json.loads((directory / MANIFEST).read_text()))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return {}


def _prune(snapshot_root: Path, *, keep: int, current: str) -> None:
    published = sorted(
        path.name for path in snapshot_root.iterdir() if path.is_dir() and path.name[0] != "."
    )
    for name in published[:-keep]:
        if name != current:
            shutil.rmtree(snapshot_root / name, ignore_errors=True)


class SnapshotUnavailable(Exception):
    """Nothing has been published yet (or the snapshot named current is gone)."""


@dataclass(frozen=True)
class Snapshot:
    """One published snapshot, queried through an in-memory DuckDB with a view per table."""

    conn: duckdb.DuckDBPyConnection
    published_at: datetime
    tables: frozenset[str]

    def has(self, name: str) -> bool:
        return name in self.tables

    def rows(self, sql: str, parameters: list[Any] | None = None) -> list[dict[str, Any]]:
        cursor = self.conn.execute(sql, parameters or [])
        names = [column[0] for column in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


@contextmanager
def open_snapshot(snapshot_root: Path) -> Iterator[Snapshot]:
    directory = _current_directory(snapshot_root)
    manifest = _manifest(directory) if directory else {}
    if directory is None or "rows" not in manifest:
        raise SnapshotUnavailable(
            f"No warehouse snapshot is published under {snapshot_root} yet: run the pipeline "
            "(or `meterbook api publish` when no run is writing)."
        )
    conn = duckdb.connect(":memory:", config={"memory_limit": "256MB", "threads": 1})
    try:
        for name in manifest["rows"]:
            path = directory / f"{name}.parquet"
            if name in manifest.get("fingerprints", {}):
                path = directory / name / "*.parquet"
            conn.execute(f"create view {name} as select * from read_parquet('{path}')")
        yield Snapshot(
            conn=conn,
            published_at=datetime.fromisoformat(manifest["published_at"]),
            tables=frozenset(manifest["rows"]),
        )
    finally:
        conn.close()

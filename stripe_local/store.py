"""State of the local Stripe in SQLite, so a restarted server keeps what it was told."""

from __future__ import annotations

import csv
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

SCHEMA = """
create table if not exists objects (
    id text primary key,
    object text not null,
    created integer not null,
    body text not null
);
create index if not exists objects_by_type on objects (object, created, id);
create table if not exists meter_events (
    identifier text primary key,
    event_name text not null,
    customer text not null,
    value integer not null,
    timestamp integer not null,
    created integer not null,
    body text not null
);
create table if not exists meter_event_corruptions (
    identifier text primary key,
    kind text not null,
    sent_value integer not null,
    applied_value integer not null
);
create index if not exists meter_events_by_customer
    on meter_events (event_name, customer, timestamp);
create table if not exists idempotency (
    api_key text not null,
    key text not null,
    request_fingerprint text not null,
    status integer not null,
    body text not null,
    created integer not null,
    primary key (api_key, key)
);
create index if not exists idempotency_by_created on idempotency (created);
create table if not exists counters (name text primary key, value integer not null);
"""

CUSTOMER_CSV_COLUMNS = ("id", "email", "name", "currency", "created", "metadata")


class LocalStripeStore:
    """Thread-safe: one connection, one lock (the server is small; correctness over speed)."""

    def __init__(self, path: Path | str = ":memory:") -> None:
        # Where this server keeps its data (absolute), so a client can tell whose server it is.
        self.path = path if str(path) == ":memory:" else str(Path(path).resolve())
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        # WAL without a sync per commit: a crash of the machine may lose the last writes of
        # this test server, never corrupt it; a sync per request made it the bottleneck.
        self._conn.execute("pragma journal_mode = wal")
        self._conn.execute("pragma synchronous = normal")
        self._conn.executescript(SCHEMA)

    @property
    def lock(self) -> threading.RLock:
        """The store's one lock; hold it to make several calls atomic."""
        return self._lock

    def close(self) -> None:
        """Close the SQLite connection (the file keeps every committed change)."""
        with self._lock:
            self._conn.close()

    # Objects (customers, meters) ------------------------------------------------------------

    def put(self, obj: dict[str, Any]) -> None:
        """Insert or update an object; an update keeps its place in list order."""
        with self._lock:
            self._conn.execute(
                "insert into objects (id, object, created, body) values (?, ?, ?, ?) "
                "on conflict (id) do update set object = excluded.object, "
                "created = excluded.created, body = excluded.body",
                [obj["id"], obj["object"], obj["created"], json.dumps(obj)],
            )

    def get(self, object_type: str, object_id: str) -> dict[str, Any] | None:
        """One object by type and id, or None."""
        with self._lock:
            row = self._conn.execute(
                "select body from objects where id = ? and object = ?", [object_id, object_type]
            ).fetchone()
        return json.loads(row[0]) if row else None

    def list(self, object_type: str) -> list[dict[str, Any]]:
        """Newest first, as Stripe lists (ties broken by insertion order, newest first)."""
        with self._lock:
            rows = self._conn.execute(
                "select body from objects where object = ? order by created desc, rowid desc",
                [object_type],
            ).fetchall()
        return [json.loads(body) for (body,) in rows]

    def count(self, object_type: str) -> int:
        """How many objects of a type are stored."""
        with self._lock:
            row = self._conn.execute(
                "select count(*) from objects where object = ?", [object_type]
            ).fetchone()
        return int(row[0])

    # Meter events ---------------------------------------------------------------------------

    def add_meter_event(
        self,
        event: dict[str, Any],
        customer: str,
        value: int,
        corruption: tuple[int, str] | None = None,
    ) -> bool:
        """Store a meter event; False (and nothing stored) when the identifier was seen before.

        ``corruption`` (applied value, kind) makes the meter count another value than was sent
        (a test-only fault); it is recorded so a test knows which events were corrupted.
        """
        applied = value if corruption is None else corruption[0]
        with self._lock:
            cursor = self._conn.execute(
                "insert or ignore into meter_events values (?, ?, ?, ?, ?, ?, ?)",
                [
                    event["identifier"],
                    event["event_name"],
                    customer,
                    applied,
                    event["timestamp"],
                    event["created"],
                    json.dumps(event),
                ],
            )
            stored = cursor.rowcount == 1
            if stored and corruption is not None:
                self._conn.execute(
                    "insert into meter_event_corruptions values (?, ?, ?, ?)",
                    [event["identifier"], corruption[1], value, applied],
                )
            return stored

    def meter_event_corruptions(self) -> list[dict[str, Any]]:
        """The meter events counted with another value than was sent, with their slot."""
        with self._lock:
            rows = self._conn.execute(
                "select c.identifier, e.event_name, e.customer, e.timestamp, c.kind, "
                "c.sent_value, c.applied_value from meter_event_corruptions c "
                "join meter_events e using (identifier) order by e.rowid"
            ).fetchall()
        names = ("identifier", "event_name", "customer", "timestamp", "kind", "sent", "applied")
        return [dict(zip(names, row, strict=True)) for row in rows]

    def meter_events(self) -> list[dict[str, Any]]:
        """Every stored meter event, in the order they arrived."""
        with self._lock:
            rows = self._conn.execute("select body from meter_events order by rowid").fetchall()
        return [json.loads(body) for (body,) in rows]

    def meter_event_count(self) -> int:
        """How many meter events are stored."""
        with self._lock:
            row = self._conn.execute("select count(*) from meter_events").fetchone()
        return int(row[0])

    def meter_event_aggregate(
        self, event_name: str, customer: str, start_time: int, end_time: int, formula: str = "sum"
    ) -> int:
        """``sum``, ``count`` or ``last`` of a customer's values with timestamp in [start, end)."""
        where = "where event_name = ? and customer = ? and timestamp >= ? and timestamp < ?"
        query = {
            "sum": f"select coalesce(sum(value), 0) from meter_events {where}",
            "count": f"select count(*) from meter_events {where}",
            "last": f"select value from meter_events {where} order by timestamp desc, rowid desc "
            "limit 1",
        }[formula]
        with self._lock:
            row = self._conn.execute(query, [event_name, customer, start_time, end_time]).fetchone()
        return int(row[0]) if row else 0

    def meter_event_sum(
        self, event_name: str, customer: str, start_time: int, end_time: int
    ) -> int:
        """Sum of a customer's values with timestamp in [start_time, end_time)."""
        return self.meter_event_aggregate(event_name, customer, start_time, end_time, "sum")

    # Idempotency ----------------------------------------------------------------------------

    def idempotent_response(self, api_key: str, key: str) -> tuple[str, int, str, int] | None:
        """(request fingerprint, status, body, created) saved for a key, or None."""
        with self._lock:
            row = self._conn.execute(
                "select request_fingerprint, status, body, created from idempotency "
                "where api_key = ? and key = ?",
                [api_key, key],
            ).fetchone()
        return (row[0], int(row[1]), row[2], int(row[3])) if row else None

    def save_idempotent_response(
        self, api_key: str, key: str, fingerprint: str, status: int, body: str, created: int
    ) -> None:
        """Remember the response to a keyed request (replacing an expired one)."""
        with self._lock:
            self._conn.execute(
                "insert or replace into idempotency values (?, ?, ?, ?, ?, ?)",
                [api_key, key, fingerprint, status, body, created],
            )

    def forget_idempotent_responses(self, created_before: int) -> None:
        """Drop keyed responses saved before a time (Stripe keeps them 24 hours)."""
        with self._lock:
            self._conn.execute("delete from idempotency where created < ?", [created_before])

    # Counters -------------------------------------------------------------------------------

    def bump(self, name: str) -> None:
        """Add one to a named counter."""
        with self._lock:
            self._conn.execute(
                "insert into counters values (?, 1) "
                "on conflict (name) do update set value = value + 1",
                [name],
            )

    def counter(self, name: str) -> int:
        """A named counter's value (0 when never bumped)."""
        with self._lock:
            row = self._conn.execute("select value from counters where name = ?", [name]).fetchone()
        return int(row[0]) if row else 0

    def counters(self, prefix: str) -> dict[str, int]:
        """Every counter whose name starts with ``prefix``, by name."""
        with self._lock:
            rows = self._conn.execute(
                "select name, value from counters where substr(name, 1, ?) = ? order by name",
                [len(prefix), prefix],
            ).fetchall()
        return {name: int(value) for name, value in rows}

    # Seeding --------------------------------------------------------------------------------

    def load_customers_csv(self, path: Path | str) -> int:
        """Load a Stripe customers export (id,email,name,currency,created,metadata), keeping ids.

        Idempotent: loading the same file again updates the same customers. Returns the row count.
        """
        path = Path(path)
        loaded = 0
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = {"id"} - set(reader.fieldnames or ())
            if missing:
                raise ValueError(f"{path}: a customers export needs the columns {missing}")
            rows = list(reader)
        with self._lock:
            self._conn.execute("begin")
            try:
                for line, row in enumerate(rows, start=2):
                    self._put_customer_row(path, line, row)
                    loaded += 1
            except BaseException:
                self._conn.execute("rollback")
                raise
            self._conn.execute("commit")
        return loaded

    def _put_customer_row(self, path: Path, line: int, row: dict[str, str]) -> None:
        """One export row as a customer object."""
        customer_id = (row.get("id") or "").strip()
        if not customer_id:
            raise ValueError(f"{path}:{line}: a customer without an id")
        try:
            metadata = json.loads(row.get("metadata") or "{}")
            created = int(row.get("created") or 0)
        except ValueError as error:
            raise ValueError(f"{path}:{line}: {error}") from None
        if not isinstance(metadata, dict) or not all(
            isinstance(value, str) for value in metadata.values()
        ):
            raise ValueError(f"{path}:{line}: metadata must be a JSON object of strings")
        self.put(
            {
                "id": customer_id,
                "object": "customer",
                "livemode": False,
                "created": created,
                "email": row.get("email") or None,
                "name": row.get("name") or None,
                "currency": row.get("currency") or None,
                "metadata": metadata,
            }
        )

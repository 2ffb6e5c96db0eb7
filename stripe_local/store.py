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
create table if not exists idempotency (
    api_key text not null,
    key text not null,
    request_fingerprint text not null,
    status integer not null,
    body text not null,
    created integer not null,
    primary key (api_key, key)
);
create table if not exists counters (name text primary key, value integer not null);
"""


class LocalStripeStore:
    """Thread-safe: one connection, one lock (the server is small; correctness over speed)."""

    def __init__(self, path: Path | str = ":memory:") -> None:
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.executescript(SCHEMA)
        self.sequence = 0

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    def put(self, obj: dict[str, Any]) -> None:
        with self._lock:
            self._conn.execute(
                "insert or replace into objects (id, object, created, body) values (?, ?, ?, ?)",
                [obj["id"], obj["object"], obj["created"], json.dumps(obj)],
            )

    def get(self, object_type: str, object_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute(
                "select body from objects where id = ? and object = ?", [object_id, object_type]
            ).fetchone()
        return json.loads(row[0]) if row else None

    def list(self, object_type: str) -> list[dict[str, Any]]:
        """Newest first, as Stripe lists."""
        with self._lock:
            rows = self._conn.execute(
                "select body from objects where object = ? order by created desc, id desc",
                [object_type],
            ).fetchall()
        return [json.loads(body) for (body,) in rows]

    def count(self, object_type: str) -> int:
        with self._lock:
            row = self._conn.execute(
                "select count(*) from objects where object = ?", [object_type]
            ).fetchone()
        return int(row[0])

    def add_meter_event(self, event: dict[str, Any], customer: str, value: int) -> bool:
        """False when the identifier was seen before."""
        with self._lock:
            cursor = self._conn.execute(
                "insert or ignore into meter_events values (?, ?, ?, ?, ?, ?, ?)",
                [
                    event["identifier"],
                    event["event_name"],
                    customer,
                    value,
                    event["timestamp"],
                    event["created"],
                    json.dumps(event),
                ],
            )
            return cursor.rowcount == 1

    def meter_events(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute(
                "select body from meter_events order by created, identifier"
            ).fetchall()
        return [json.loads(body) for (body,) in rows]

    def meter_event_sum(
        self, event_name: str, customer: str, start_time: int, end_time: int
    ) -> int:
        with self._lock:
            row = self._conn.execute(
                "select coalesce(sum(value), 0) from meter_events where event_name = ? "
                "and customer = ? and timestamp >= ? and timestamp < ?",
                [event_name, customer, start_time, end_time],
            ).fetchone()
        return int(row[0])

    def idempotent_response(self, api_key: str, key: str) -> tuple[str, int, str, int] | None:
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
        with self._lock:
            self._conn.execute(
                "insert or replace into idempotency values (?, ?, ?, ?, ?, ?)",
                [api_key, key, fingerprint, status, body, created],
            )

    def bump(self, name: str) -> None:
        with self._lock:
            self._conn.execute(
                "insert into counters values (?, 1) "
                "on conflict (name) do update set value = value + 1",
                [name],
            )

    def counter(self, name: str) -> int:
        with self._lock:
            row = self._conn.execute("select value from counters where name = ?", [name]).fetchone()
        return int(row[0]) if row else 0

    def load_customers_csv(self, path: Path) -> int:
        """Customers of a Stripe export, with their ids: the account the export came from."""
        loaded = 0
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                metadata = json.loads(row.get("metadata") or "{}")
                self.put(
                    {
                        "id": row["id"],
                        "object": "customer",
                        "livemode": False,
                        "created": int(row.get("created") or 0),
                        "email": row.get("email"),
                        "name": row.get("name"),
                        "currency": row.get("currency") or None,
                        "metadata": metadata,
                    }
                )
                loaded += 1
        return loaded

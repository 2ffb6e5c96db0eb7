"""Versioned schema migrations: numbered SQL files, each applied exactly once, in order."""

from __future__ import annotations

from pathlib import Path

import psycopg

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def migrate(conn: psycopg.Connection) -> list[str]:
    """Apply the migrations not applied yet; returns their names. Safe to call concurrently."""
    applied_now = []
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('meterbook.ledger.migrations'))")
        conn.execute("create schema if not exists ledger")
        conn.execute(
            "create table if not exists ledger.schema_migrations ("
            "name text primary key, applied_at timestamptz not null default now())"
        )
        applied = {row[0] for row in conn.execute("select name from ledger.schema_migrations")}
        for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
            if path.name in applied:
                continue
            conn.execute(path.read_text())  # type: ignore[arg-type]
            conn.execute("insert into ledger.schema_migrations (name) values (%s)", [path.name])
            applied_now.append(path.name)
    return applied_now

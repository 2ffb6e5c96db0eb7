"""Versioned schema migrations: numbered SQL files, each applied exactly once, in order.

Records are immutable, so the schema only moves forward: a new file, never an edited one.
"""

from __future__ import annotations

import re
from pathlib import Path

import psycopg

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# One lock for every process that migrates this database; held until the migration commits.
ADVISORY_LOCK_SQL = "select pg_advisory_xact_lock(hashtext('meterbook.ledger.migrations'))"


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    """The migration files in order; a misnamed or duplicate number is refused, not skipped."""
    paths = sorted(directory.glob("*.sql"))
    numbers = []
    for path in paths:
        match = MIGRATION_NAME.match(path.name)
        if match is None:
            raise ValueError(f"Migration file {path.name} must be named NNNN_lower_snake_case.sql.")
        numbers.append(int(match.group(1)))
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"Migrations must be numbered 0001, 0002, … without gaps: {numbers}.")
    return paths


def migrate(conn: psycopg.Connection) -> list[str]:
    """Apply the migrations not applied yet; returns their names. Safe to call concurrently.

    All of it runs in one database transaction under an advisory lock: concurrent callers wait,
    then find the work done; a failing migration leaves the schema as it was.
    """
    paths = migration_files()
    applied_now = []
    with conn.transaction():
        conn.execute(ADVISORY_LOCK_SQL)
        conn.execute("create schema if not exists ledger")
        conn.execute(
            "create table if not exists ledger.schema_migrations ("
            "name text primary key, applied_at timestamptz not null default now())"
        )
        applied = {row[0] for row in conn.execute("select name from ledger.schema_migrations")}
        unknown = applied - {path.name for path in paths}
        if unknown:
            raise RuntimeError(
                f"The ledger database has migrations this code does not know: {sorted(unknown)}. "
                "It was migrated by a newer version of Meterbook; run that version."
            )
        for path in paths:
            if path.name in applied:
                continue
            conn.execute(path.read_text())  # type: ignore[arg-type]
            conn.execute("insert into ledger.schema_migrations (name) values (%s)", [path.name])
            applied_now.append(path.name)
    return applied_now

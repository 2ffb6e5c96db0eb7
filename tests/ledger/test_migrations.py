"""Migrations: numbered files applied once, in order; a ledger posted under 0001 upgrades."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from ledger import Ledger, migrate
from ledger.migrations import MIGRATIONS_DIR, migration_files
from tests.ledger.helpers import transfer


def post_like_version_0001(conn: psycopg.Connection) -> None:
    """Apply only 0001 and post rows the way the first version of the ledger did."""
    with conn.transaction():
        conn.execute((MIGRATIONS_DIR / "0001_initial.sql").read_text())  # type: ignore[arg-type]
        conn.execute(
            "create table ledger.schema_migrations (name text primary key, "
            "applied_at timestamptz not null default now())"
        )
        conn.execute("insert into ledger.schema_migrations values ('0001_initial.sql')")
    for transaction in (transfer("t1", "a", "b", "1.5"), transfer("t2", "b", "c", "0.25")):
        with conn.transaction():
            for entry in transaction.entries:
                conn.execute(
                    "insert into ledger.accounts (name, currency) values (%s, %s) "
                    "on conflict do nothing",
                    [entry.account, entry.currency],
                )
            (transaction_id,) = conn.execute(
                "insert into ledger.transactions (transaction_key, kind, cause_type, cause_id, "
                "effective_at, content_hash) values (%s, %s, %s, %s, %s, %s) returning id",
                [
                    transaction.key,
                    transaction.kind,
                    transaction.cause_type,
                    transaction.cause_id,
                    transaction.effective_at,
                    transaction.content_hash(),
                ],
            ).fetchone() or (0,)
            for entry in transaction.entries:
                conn.execute(
                    "insert into ledger.entries (transaction_id, account, amount_minor, currency) "
                    "values (%s, %s, %s, %s)",
                    [transaction_id, entry.account, entry.amount_minor, entry.currency],
                )


def test_a_ledger_posted_under_0001_upgrades_and_keeps_its_content(ledger_url: str) -> None:
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        post_like_version_0001(conn)
        assert migrate(conn) == [path.name for path in migration_files()[1:]]
    with Ledger.connect(ledger_url) as book:
        report = book.verify(recompute_hashes=True)  # rows of 0001 still match their hashes
        assert report.ok
        assert (report.transactions, report.entries) == (2, 4)
        replay = book.post_many([transfer("t1", "a", "b", "1.50"), transfer("t3", "a", "c", "1")])
        assert (replay.created, replay.existing) == (1, 1)
        assert book.balance("a", "usd") == Decimal("2.5")


def test_a_database_migrated_by_newer_code_is_refused(book: Ledger, ledger_url: str) -> None:
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        conn.execute("insert into ledger.schema_migrations (name) values ('0099_future.sql')")
        with pytest.raises(RuntimeError, match="0099_future"):
            migrate(conn)


def test_the_shipped_migrations_are_numbered_without_gaps() -> None:
    assert [path.name[:4] for path in migration_files()] == [
        "0001",
        "0002",
        "0003",
        "0004",
        "0005",
        "0006",
        "0007",
        "0008",
        "0009",
    ]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["0001_a.sql", "0003_c.sql"], "without gaps"),
        (["0001_a.sql", "0001_b.sql"], "without gaps"),
        (["1_a.sql"], "NNNN_lower_snake_case"),
        (["0001_Add Thing.sql"], "NNNN_lower_snake_case"),
    ],
)
def test_misnamed_or_misnumbered_migrations_are_refused(
    tmp_path: Path, names: list[str], message: str
) -> None:
    for name in names:
        (tmp_path / name).write_text("select 1;")
    with pytest.raises(ValueError, match=message):
        migration_files(tmp_path)

"""Small builders for ledger tests."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import psycopg

from ledger import Entry, Transaction

WHEN = datetime(2026, 10, 1, tzinfo=UTC)
SOME_HASH = "0" * 64


def transfer(
    key: str, debit: str, credit: str, amount: str | Decimal, currency: str = "usd"
) -> Transaction:
    """Move ``amount`` from ``credit`` to ``debit``: the smallest balanced transaction."""
    value = Decimal(amount)
    return Transaction(
        key=key,
        kind="test",
        cause_type="test",
        cause_id=key,
        effective_at=WHEN,
        entries=(Entry(debit, value, currency), Entry(credit, value.copy_negate(), currency)),
    )


def insert_raw_transaction(conn: psycopg.Connection, key: str) -> int:
    """A transaction row written by hand, bypassing Python's checks; returns its id."""
    row = conn.execute(
        "insert into ledger.transactions (transaction_key, kind, cause_type, cause_id, "
        "effective_at, content_hash) values (%s, 'k', 'c', 'i', now(), %s) returning id",
        [key, SOME_HASH],
    ).fetchone()
    assert row is not None
    return int(row[0])


def insert_raw_entry(
    conn: psycopg.Connection, transaction_id: int, account: str, amount: str, currency: str = "usd"
) -> None:
    conn.execute(
        "insert into ledger.accounts (name, currency) values (%s, %s) on conflict do nothing",
        [account, currency],
    )
    conn.execute(
        "insert into ledger.entries (transaction_id, account, amount_minor, currency) "
        "values (%s, %s, %s, %s)",
        [transaction_id, account, Decimal(amount), currency],
    )

"""verify(): invariants re-checked from stored rows, and a content hash of the whole ledger."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import psycopg

from ledger import Entry, Ledger, Transaction
from tests.ledger.helpers import insert_raw_entry, insert_raw_transaction, transfer

BATCH = [transfer(f"t{n}", "a", f"b{n % 3}", f"{n}.{n}") for n in range(1, 12)]


def ledger_hash(url: str, parts: list[list[Transaction]]) -> str:
    with Ledger.connect(url) as book:
        for part in parts:
            book.post_many(part)
        report = book.verify(recompute_hashes=True)
        assert report.ok
        assert report.content_hash == book.verify().content_hash
        return report.content_hash


def test_the_hash_ignores_posting_order_batches_and_replays(
    new_database: Callable[[], str],
) -> None:
    arrangements = [
        [BATCH],
        [list(reversed(BATCH))],
        [BATCH[5:], BATCH[:5]],
        [[t] for t in reversed(BATCH)],
        [BATCH[:7], BATCH, BATCH[3:]],  # replays post nothing new
    ]
    hashes = {ledger_hash(new_database(), parts) for parts in arrangements}
    assert len(hashes) == 1
    assert ledger_hash(new_database(), [BATCH[:-1]]) not in hashes
    other_amount = [*BATCH[:-1], transfer("t11", "a", "b2", "11.12")]
    assert ledger_hash(new_database(), [other_amount]) not in hashes


def test_hashes_are_stable_across_versions(book: Ledger) -> None:
    """Stored content hashes decide idempotency: changing how they are computed would make
    every replay of an existing ledger a conflict. These values must never change."""
    transaction = Transaction(
        key="usage_accrual:c1:m1:2026-10-01:r1",
        kind="usage_accrual",
        cause_type="usage_slot",
        cause_id="c1:m1:2026-10-01",
        effective_at=datetime(2026, 10, 1, tzinfo=UTC),
        entries=(
            Entry("customer:c1:unbilled_receivable", Decimal("1.50"), "usd"),
            Entry("platform:usage_revenue", Decimal("-1.5"), "usd"),
        ),
        metadata={"revision": "1"},
    )
    transaction_hash = "23da014d9537da05e41b4d49faf9b5613800a0ad09477cfc11bc89da670cd20b"
    assert transaction.content_hash() == transaction_hash
    book.post_many([transaction])
    # sha256 of "<key>\t<transaction hash>\n" per transaction, in key order.
    expected = hashlib.sha256(f"{transaction.key}\t{transaction_hash}\n".encode()).hexdigest()
    assert expected == "54d5a93fc8755dd7096fa983cd1631023494bbb219c562f6d46d1fe1b311e208"
    assert book.verify().content_hash == expected


def test_an_empty_ledger_has_the_hash_of_nothing(book: Ledger) -> None:
    report = book.verify()
    assert (report.transactions, report.entries) == (0, 0)
    assert report.content_hash == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def bypass_triggers(conn: psycopg.Connection) -> None:
    """What only a superuser could do: switch off triggers and foreign keys for this session."""
    conn.execute("set session_replication_role = replica")


def test_verify_finds_what_bypassed_the_database(book: Ledger, raw: psycopg.Connection) -> None:
    book.post_many([transfer("t1", "a", "b", "1"), transfer("t2", "a", "b", "2")])
    healthy = book.verify()
    bypass_triggers(raw)
    with raw.transaction():
        raw.execute("update ledger.entries set amount_minor = amount_minor * 2")
        transaction_id = insert_raw_transaction(raw, "t3")
        insert_raw_entry(raw, transaction_id, "a", "1")
        raw.execute(
            "insert into ledger.accounts (name, currency, normal_side, must_not_go_negative) "
            "values ('wallet', 'usd', 'debit', true)"
        )
        transaction_id = insert_raw_transaction(raw, "t4")
        insert_raw_entry(raw, transaction_id, "wallet", "-1")
        insert_raw_entry(raw, transaction_id, "shop", "1")
    assert book.verify().hash_mismatched_transactions == []  # stored hashes are not re-derived
    report = book.verify(recompute_hashes=True)
    assert report.unbalanced_transactions == ["t3"]
    assert report.hash_mismatched_transactions == ["t1", "t2", "t3", "t4"]
    assert report.negative_guarded_accounts == ["wallet"]
    assert not report.ok
    # Recomputed from the rows, the ledger hash shows the change; the stored hashes cannot.
    assert report.content_hash != book.verify().content_hash
    assert report.content_hash != healthy.content_hash


def test_verify_finds_orphans_and_a_global_imbalance(book: Ledger, raw: psycopg.Connection) -> None:
    book.post_many([transfer("t1", "a", "b", "1")])
    assert book.verify().ok
    bypass_triggers(raw)
    with raw.transaction():
        raw.execute(
            "insert into ledger.entries (transaction_id, account, amount_minor, currency) "
            "values (999999, 'a', 5, 'usd'), (999999, 'nowhere', -2, 'usd')"
        )
    report = book.verify()
    assert report.global_imbalance == {"usd": Decimal("3")}
    assert len(report.orphan_entries) == 2
    assert not report.ok
    assert any("orphan" in problem for problem in report.problems())

"""What the database itself refuses, proven with raw SQL that bypasses Python's checks."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from ledger import Ledger
from tests.ledger.helpers import insert_raw_entry, insert_raw_transaction, transfer


def test_an_unbalanced_transaction_is_refused_at_commit(raw: psycopg.Connection) -> None:
    with (
        pytest.raises(errors.CheckViolation, match="raw does not balance in usd"),
        raw.transaction(),
    ):
        transaction_id = insert_raw_transaction(raw, "raw")
        insert_raw_entry(raw, transaction_id, "a", "5")
        insert_raw_entry(raw, transaction_id, "b", "-4")  # accepted until commit
    assert raw.execute("select count(*) from ledger.transactions").fetchone() == (0,)


def test_each_currency_must_balance_on_its_own(raw: psycopg.Connection) -> None:
    with pytest.raises(errors.CheckViolation, match="does not balance"), raw.transaction():
        transaction_id = insert_raw_transaction(raw, "fx")
        insert_raw_entry(raw, transaction_id, "a", "5", "usd")
        insert_raw_entry(raw, transaction_id, "b", "-5", "eur")


@pytest.mark.parametrize("entries", [0, 1])
def test_a_transaction_needs_two_entries(raw: psycopg.Connection, entries: int) -> None:
    with pytest.raises(errors.CheckViolation, match=f"has {entries} entries"), raw.transaction():
        transaction_id = insert_raw_transaction(raw, "short")
        if entries:
            insert_raw_entry(raw, transaction_id, "a", "0")


def test_a_balanced_raw_transaction_is_accepted(raw: psycopg.Connection) -> None:
    with raw.transaction():
        transaction_id = insert_raw_transaction(raw, "fine")
        insert_raw_entry(raw, transaction_id, "a", "0.000000000001")
        insert_raw_entry(raw, transaction_id, "b", "-0.000000000001")
    assert raw.execute("select count(*) from ledger.entries").fetchone() == (2,)


def test_a_posted_transaction_cannot_gain_entries(book: Ledger, raw: psycopg.Connection) -> None:
    book.post_many([transfer("t1", "a", "b", "1")])
    (transaction_id,) = raw.execute("select id from ledger.transactions").fetchone() or (0,)
    with pytest.raises(errors.CheckViolation, match="posted before"), raw.transaction():
        insert_raw_entry(raw, transaction_id, "a", "5")  # balanced, and still refused
        insert_raw_entry(raw, transaction_id, "b", "-5")
    assert book.verify().entries == 2


@pytest.mark.parametrize(
    "statement",
    [
        "update ledger.entries set amount_minor = 0",
        "update ledger.transactions set kind = 'x'",
        "update ledger.accounts set currency = 'eur'",
        "delete from ledger.entries",
        "delete from ledger.transactions",
        "delete from ledger.accounts",
        "truncate ledger.entries",
        "truncate ledger.transactions cascade",
        "truncate ledger.accounts cascade",
        "update ledger.entries set amount_minor = amount_minor where false",  # even no rows
        "update ledger.posted_batches set transactions = 2",
        "delete from ledger.posted_batches",
        "truncate ledger.posted_batches",
    ],
)
def test_posted_rows_never_change(book: Ledger, raw: psycopg.Connection, statement: str) -> None:
    book.post_many([transfer("t1", "a", "b", "1")])
    before = book.verify()
    with pytest.raises(errors.RaiseException, match="append-only"), raw.transaction():
        raw.execute(statement)
    assert book.verify() == before


def test_a_batch_is_recorded_as_posted_only_with_its_transactions(
    book: Ledger, raw: psycopg.Connection
) -> None:
    """A row of posted_batches makes a replay a no-op, so a client cannot write one on its own
    (which would have a batch skipped, never posted)."""
    forged = (
        "insert into ledger.posted_batches (keys_digest, content_digest, transactions) "
        "values (%s, %s, 1)"
    )
    with pytest.raises(errors.InsufficientPrivilege, match="posted_batches"), raw.transaction():
        raw.execute(forged, [b"k" * 32, b"c" * 32])
    book.post_many([transfer("t1", "a", "b", "1")])
    assert raw.execute("select transactions from ledger.posted_batches").fetchall() == [(1,)]


def test_an_entry_must_be_in_its_accounts_currency(book: Ledger, raw: psycopg.Connection) -> None:
    book.post_many([transfer("t1", "a", "b", "1")])
    with pytest.raises(errors.ForeignKeyViolation), raw.transaction():
        transaction_id = insert_raw_transaction(raw, "eur")
        raw.execute(
            "insert into ledger.entries (transaction_id, account, amount_minor, currency) "
            "values (%s, 'a', 1, 'eur'), (%s, 'b', -1, 'eur')",
            [transaction_id, transaction_id],
        )


@pytest.mark.parametrize(
    ("column", "value", "constraint"),
    [
        ("content_hash", "not-a-sha256", "transactions_content_hash_sha256"),
        ("transaction_key", "", "transactions_key_length"),
        ("transaction_key", "k" * 256, "transactions_key_length"),
    ],
)
def test_transaction_columns_are_checked(
    raw: psycopg.Connection, column: str, value: str, constraint: str
) -> None:
    row = {"transaction_key": "k", "content_hash": "0" * 64, column: value}
    with pytest.raises(errors.CheckViolation, match=constraint):
        raw.execute(
            "insert into ledger.transactions (transaction_key, kind, cause_type, cause_id, "
            "effective_at, content_hash) values (%s, 'k', 'c', 'i', now(), %s)",
            [row["transaction_key"], row["content_hash"]],
        )


def test_a_guarded_account_is_checked_by_the_database(
    book: Ledger, raw: psycopg.Connection
) -> None:
    raw.execute(
        "insert into ledger.accounts (name, currency, normal_side, must_not_go_negative) "
        "values ('wallet', 'usd', 'debit', true)"
    )
    with (
        pytest.raises(errors.CheckViolation, match="wallet must not go negative"),
        raw.transaction(),
    ):
        transaction_id = insert_raw_transaction(raw, "overdraw")
        insert_raw_entry(raw, transaction_id, "wallet", "-1")
        insert_raw_entry(raw, transaction_id, "shop", "1")
    assert book.verify().ok


def test_entries_added_after_an_early_check_are_checked_again(raw: psycopg.Connection) -> None:
    """Checking constraints early does not open a window: later entries are checked too."""
    with pytest.raises(errors.CheckViolation, match="does not balance"), raw.transaction():
        transaction_id = insert_raw_transaction(raw, "late")
        insert_raw_entry(raw, transaction_id, "a", "1")
        insert_raw_entry(raw, transaction_id, "b", "-1")
        raw.execute("set constraints all immediate")  # checked here, and balanced
        insert_raw_entry(raw, transaction_id, "a", "5")
    assert raw.execute("select count(*) from ledger.entries").fetchone() == (0,)


def test_a_guarded_account_touched_by_a_later_statement_is_checked(
    book: Ledger, raw: psycopg.Connection
) -> None:
    raw.execute(
        "insert into ledger.accounts (name, currency, normal_side, must_not_go_negative) "
        "values ('wallet', 'usd', 'debit', true)"
    )
    with (
        pytest.raises(errors.CheckViolation, match="wallet must not go negative"),
        raw.transaction(),
    ):
        first = insert_raw_transaction(raw, "fine")
        insert_raw_entry(raw, first, "shop", "1")
        insert_raw_entry(raw, first, "bank", "-1")
        second = insert_raw_transaction(raw, "overdraw")
        insert_raw_entry(raw, second, "shop", "1")
        insert_raw_entry(raw, second, "wallet", "-1")
    assert book.verify().ok


def test_a_transaction_left_without_entries_beside_a_balanced_one_is_refused(
    raw: psycopg.Connection,
) -> None:
    """The commit check's shortcut (every transaction balanced within one entries statement)
    counts transactions: one left out is still found."""
    with pytest.raises(errors.CheckViolation, match="has 0 entries"), raw.transaction():
        first = insert_raw_transaction(raw, "complete")
        insert_raw_transaction(raw, "empty")
        raw.execute(
            "insert into ledger.accounts (name, currency) values ('a', 'usd'), ('b', 'usd')"
        )
        raw.execute(
            "insert into ledger.entries (transaction_id, account, amount_minor, currency) "
            "values (%s, 'a', 1, 'usd'), (%s, 'b', -1, 'usd')",
            [first, first],
        )
    assert raw.execute("select count(*) from ledger.transactions").fetchone() == (0,)


def test_entries_of_a_transaction_written_in_a_savepoint_are_refused_as_before(
    raw: psycopg.Connection,
) -> None:
    """The noted id range does not vouch for rows written inside a savepoint."""
    with pytest.raises(errors.CheckViolation, match="posted before"), raw.transaction():
        with raw.transaction():  # a savepoint
            transaction_id = insert_raw_transaction(raw, "nested")
        raw.execute(
            "insert into ledger.accounts (name, currency) values ('a', 'usd'), ('b', 'usd')"
        )
        raw.execute(
            "insert into ledger.entries (transaction_id, account, amount_minor, currency) "
            "values (%s, 'a', 1, 'usd'), (%s, 'b', -1, 'usd')",
            [transaction_id, transaction_id],
        )


@pytest.mark.parametrize(
    "statement",
    [
        "delete from ledger.pending_checks",
        "insert into ledger.pending_checks (xid, first_transaction_id) "
        "values (pg_current_xact_id(), 1)",
        "truncate ledger.pending_checks",
    ],
)
def test_the_pending_checks_are_written_only_by_the_ledgers_triggers(
    raw: psycopg.Connection, statement: str
) -> None:
    """Writing them directly could make the commit check skip its work."""
    with pytest.raises(errors.InsufficientPrivilege, match="only by the ledger's triggers"):
        raw.execute(statement)

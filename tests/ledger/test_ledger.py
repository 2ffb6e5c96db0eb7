"""The ledger's guarantees, each enforced by the database or the posting function."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import (
    Entry,
    Ledger,
    LedgerConflictError,
    LedgerValidationError,
    Transaction,
)

WHEN = datetime(2026, 10, 1, tzinfo=UTC)


def transfer(key: str, debit: str, credit: str, amount: str, currency: str = "usd") -> Transaction:
    value = Decimal(amount)
    return Transaction(
        key=key,
        kind="test",
        cause_type="test",
        cause_id=key,
        effective_at=WHEN,
        entries=(Entry(debit, value, currency), Entry(credit, -value, currency)),
    )


@pytest.fixture
def book(ledger_url: str) -> Ledger:
    with Ledger.connect(ledger_url) as ledger:
        yield ledger


def test_posting_is_idempotent_on_the_key(book: Ledger) -> None:
    first = book.post_many([transfer("t1", "a", "b", "1.50")])
    again = book.post_many([transfer("t1", "a", "b", "1.5")])  # same amount, other spelling
    assert (first.created, again.created, again.existing) == (1, 0, 1)
    assert book.balance("a", "usd") == Decimal("1.5")


def test_same_key_different_content_is_refused_and_nothing_is_written(book: Ledger) -> None:
    book.post_many([transfer("t1", "a", "b", "1")])
    with pytest.raises(LedgerConflictError, match="t1"):
        book.post_many([transfer("t2", "a", "b", "5"), transfer("t1", "a", "b", "2")])
    report = book.verify()
    assert report.transactions == 1
    assert book.balance("a", "usd") == Decimal(1)


def test_python_refuses_malformed_transactions() -> None:
    with pytest.raises(LedgerValidationError, match="does not balance"):
        Transaction(
            key="x",
            kind="k",
            cause_type="c",
            cause_id="i",
            effective_at=WHEN,
            entries=(Entry("a", Decimal(1), "usd"), Entry("b", Decimal(-2), "usd")),
        )
    with pytest.raises(LedgerValidationError, match="Decimal"):
        Entry("a", 1.5, "usd")  # type: ignore[arg-type]
    with pytest.raises(LedgerValidationError, match="decimal places"):
        Entry("a", Decimal("0.0000000000001"), "usd")
    with pytest.raises(LedgerValidationError, match="time zone"):
        transfer("x", "a", "b", "1").__class__(
            key="x",
            kind="k",
            cause_type="c",
            cause_id="i",
            effective_at=datetime(2026, 1, 1),
            entries=(Entry("a", Decimal(1), "usd"), Entry("b", Decimal(-1), "usd")),
        )


def test_the_database_refuses_unbalanced_and_changed_rows(book: Ledger, ledger_url: str) -> None:
    book.post_many([transfer("t1", "a", "b", "1")])
    with psycopg.connect(ledger_url) as conn:
        with (
            pytest.raises(psycopg.errors.RaiseException, match="does not balance"),
            conn.transaction(),
        ):
            row = conn.execute(
                "insert into ledger.transactions (transaction_key, kind, cause_type, "
                "cause_id, effective_at, content_hash) values ('raw', 'k', 'c', 'i', now(), "
                "'h') returning id"
            ).fetchone()
            assert row is not None
            for account, amount in (("a", 5), ("b", -4)):
                conn.execute(
                    "insert into ledger.entries (transaction_id, account, amount_minor, "
                    "currency) values (%s, %s, %s, 'usd')",
                    [row[0], account, amount],
                )
        for statement in (
            "update ledger.entries set amount_minor = 0",
            "delete from ledger.transactions",
            "delete from ledger.entries",
        ):
            with (
                pytest.raises(psycopg.errors.RaiseException, match="append-only"),
                conn.transaction(),
            ):
                conn.execute(statement)
    assert book.verify().transactions == 1


def test_concurrent_writers_post_each_key_once(book: Ledger, ledger_url: str) -> None:
    batch = [transfer(f"k{n}", "a", "b", "0.01") for n in range(40)]
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with Ledger.connect(ledger_url) as own:
                own.post_many(batch)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert book.verify().transactions == 40
    assert book.balance("a", "usd") == Decimal("0.40")


amounts = st.decimals(
    min_value=Decimal("-1000000"),
    max_value=Decimal("1000000"),
    places=12,
    allow_nan=False,
    allow_infinity=False,
).filter(lambda d: d != 0)
accounts = st.sampled_from(["customer:a", "customer:b", "platform:revenue", "platform:cash"])
transfers = st.lists(
    st.tuples(accounts, accounts, amounts, st.sampled_from(["usd", "eur"])),
    min_size=1,
    max_size=15,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(transfers=transfers, order=st.randoms(use_true_random=False))
def test_balances_are_sums_of_entries_and_the_hash_ignores_order(
    postgres_url: str, transfers: list[tuple[str, str, Decimal, str]], order: object
) -> None:
    import uuid

    batch = [
        transfer(f"p{n}", debit, credit, str(amount), currency)
        for n, (debit, credit, amount, currency) in enumerate(transfers)
    ]
    hashes = []
    for shuffle in (False, True):
        name = f"h_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'create database "{name}"')
        with Ledger.connect(postgres_url.replace("/postgres?", f"/{name}?", 1)) as book:
            posting = list(batch)
            if shuffle:
                order.shuffle(posting)  # type: ignore[attr-defined]
            book.post_many(posting)
            assert book.post_many(posting).created == 0
            report = book.verify()
            assert report.transactions == len(batch)
            assert not report.unbalanced_transactions
            for currency in ("usd", "eur"):
                expected: dict[str, Decimal] = {}
                for t in batch:
                    for e in t.entries:
                        if e.currency == currency:
                            expected[e.account] = (
                                expected.get(e.account, Decimal(0)) + e.amount_minor
                            )
                for account, total in expected.items():
                    assert book.balance(account, currency) == total
                assert sum(expected.values(), Decimal(0)) == 0
            hashes.append(report.content_hash)
    assert hashes[0] == hashes[1]

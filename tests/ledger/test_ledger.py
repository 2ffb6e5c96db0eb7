"""The ledger's guarantees, each enforced by the database or the posting function."""

from __future__ import annotations

import random
import threading
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import (
    CauseTotal,
    Entry,
    Ledger,
    LedgerConflictError,
    LedgerValidationError,
    PostResult,
    Transaction,
    VerifyReport,
)
from ledger.embedded import embedded_ledger_url
from ledger.migrations import migrate
from ledger.usage_accruals import RatedSlot, plan_usage_accruals

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
    """Overlapping batches in different orders from several connections: no deadlock, no
    duplicate, every key posted exactly once."""
    every = [transfer(f"k{n:02d}", f"acct{n % 7}", f"acct{(n + 3) % 7}", "0.01") for n in range(60)]
    batches = []
    for writer_number in range(6):
        batch = every[writer_number * 8 : writer_number * 8 + 20]
        random.Random(writer_number).shuffle(batch)
        batches.append(batch)
    errors: list[BaseException] = []
    results: list[PostResult] = []
    start = threading.Barrier(len(batches))

    def writer(batch: list[Transaction]) -> None:
        try:
            with Ledger.connect(ledger_url) as own:
                start.wait()
                results.append(own.post_many(batch))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    posted_keys = {t.key for batch in batches for t in batch}
    assert sum(r.created for r in results) == len(posted_keys)
    assert sum(r.created + r.existing for r in results) == sum(len(b) for b in batches)
    report = book.verify()
    assert report.transactions == len(posted_keys)
    assert report.entries == 2 * len(posted_keys)
    assert not report.unbalanced_transactions


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
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(transfers=transfers, order=st.randoms(use_true_random=False))
def test_balances_are_sums_of_entries_and_the_hash_ignores_order(
    postgres_url: str, transfers: list[tuple[str, str, Decimal, str]], order: object
) -> None:
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


def fresh_database(postgres_url: str) -> str:
    name = f"x_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    return postgres_url.replace("/postgres?", f"/{name}?", 1)


def test_a_balanced_post_moves_both_accounts(book: Ledger) -> None:
    result = book.post_many(
        [
            transfer("t1", "customer:c1:unbilled_receivable", "platform:usage_revenue", "2.25"),
            transfer("t2", "customer:c1:unbilled_receivable", "platform:usage_revenue", "0.0001"),
            transfer("t3", "cash", "platform:usage_revenue", "7", currency="eur"),
        ]
    )
    assert result == PostResult(created=3, existing=0)
    assert book.balance("customer:c1:unbilled_receivable", "usd") == Decimal("2.2501")
    assert book.balance("platform:usage_revenue", "usd") == Decimal("-2.2501")
    assert book.balance("platform:usage_revenue", "eur") == Decimal(-7)
    assert book.balance("nobody", "usd") == 0
    report = book.verify()
    assert isinstance(report, VerifyReport)
    assert (report.transactions, report.entries, report.unbalanced_transactions) == (3, 6, [])


def exact_transfer(key: str, amount: Decimal) -> Transaction:
    # copy_negate is exact; unary minus would round to the default context's 28 digits.
    entries = (Entry("a", amount, "usd"), Entry("b", amount.copy_negate(), "usd"))
    return Transaction(key, "k", "c", "i", WHEN, entries)


def test_amounts_keep_all_38_digits(book: Ledger) -> None:
    big = Decimal("12345678901234567890123456.123456789012")
    almost = Decimal("12345678901234567890123456.123456789011")
    with pytest.raises(LedgerValidationError, match="does not balance"):
        Transaction("x", "k", "c", "i", WHEN, (Entry("a", big, "usd"), Entry("b", -almost, "usd")))
    with pytest.raises(LedgerValidationError, match="too large"):
        Entry("a", Decimal("1e26"), "usd")
    assert exact_transfer("x", big).content_hash() != exact_transfer("x", almost).content_hash()
    book.post_many([exact_transfer("big", big)])
    assert book.balance("a", "usd") == big
    assert book.balance("b", "usd") == big.copy_negate()
    assert book.post_many([exact_transfer("big", Decimal(str(big) + "000"))]).existing == 1
    with pytest.raises(LedgerConflictError, match="big"):
        book.post_many([exact_transfer("big", almost)])


def test_content_hash_ignores_spelling_and_entry_order_but_not_content() -> None:
    base = transfer("t", "a", "b", "1.50")
    swapped = Transaction(
        key="t",
        kind="test",
        cause_type="test",
        cause_id="t",
        effective_at=WHEN.astimezone(datetime.now().astimezone().tzinfo),
        entries=(Entry("b", Decimal("-1.5"), "usd"), Entry("a", Decimal("1.500"), "usd")),
    )
    assert base.content_hash() == swapped.content_hash()
    assert base.content_hash() != transfer("t", "a", "b", "1.51").content_hash()
    with_metadata = Transaction(**{**base.__dict__, "metadata": {"r": "1"}})
    assert with_metadata.content_hash() != base.content_hash()


def test_the_database_refuses_a_single_entry_and_truncate(book: Ledger, ledger_url: str) -> None:
    book.post_many([transfer("t1", "a", "b", "1")])
    with psycopg.connect(ledger_url) as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="at least two"), conn.transaction():
            row = conn.execute(
                "insert into ledger.transactions (transaction_key, kind, cause_type, "
                "cause_id, effective_at, content_hash) values ('one', 'k', 'c', 'i', now(), "
                "'h') returning id"
            ).fetchone()
            assert row is not None
            conn.execute(
                "insert into ledger.entries (transaction_id, account, amount_minor, currency) "
                "values (%s, 'a', 0, 'usd')",
                [row[0]],
            )
        for statement in ("update ledger.transactions set kind = 'x'", "truncate ledger.entries"):
            with (
                pytest.raises(psycopg.errors.RaiseException, match="append-only"),
                conn.transaction(),
            ):
                conn.execute(statement)
    assert book.verify().entries == 2


def test_verify_hash_is_independent_of_posting_order_and_batches(postgres_url: str) -> None:
    batch = [transfer(f"t{n}", "a", f"b{n % 3}", f"{n}.{n}") for n in range(1, 12)]
    hashes = []
    for arrangement in (
        [batch],
        [list(reversed(batch))],
        [batch[5:], batch[:5]],
        [[t] for t in reversed(batch)],
    ):
        with Ledger.connect(fresh_database(postgres_url)) as book:
            for part in arrangement:
                book.post_many(part)
            hashes.append(book.verify().content_hash)
    assert len(set(hashes)) == 1
    with Ledger.connect(fresh_database(postgres_url)) as book:
        book.post_many(batch[:-1])
        assert book.verify().content_hash != hashes[0]


def test_migrations_apply_once_even_concurrently(ledger_url: str) -> None:
    applied: list[list[str]] = []

    def run() -> None:
        with psycopg.connect(ledger_url, autocommit=True) as conn:
            applied.append(migrate(conn))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(applied, key=len) == [[], [], [], ["0001_initial.sql"]]
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        assert migrate(conn) == []
        names = conn.execute("select name from ledger.schema_migrations").fetchall()
    assert names == [("0001_initial.sql",)]


def test_cause_totals_count_revisions_and_sum_per_account(book: Ledger) -> None:
    day = datetime(2026, 10, 1, tzinfo=UTC).date()
    slot = RatedSlot("c1", "m1", day, "usd", Decimal("3.333"))
    first = plan_usage_accruals(
        [slot], posted=book.cause_totals("usage_accrual"), usage_dates={day}
    )
    assert [t.key for t in first] == ["usage_accrual:c1:m1:2026-10-01:r1"]
    book.post_many(first)
    unchanged = plan_usage_accruals(
        [slot], posted=book.cause_totals("usage_accrual"), usage_dates={day}
    )
    assert unchanged == []
    later = RatedSlot("c1", "m1", day, "usd", Decimal("5"))
    book.post_many(
        plan_usage_accruals([later], posted=book.cause_totals("usage_accrual"), usage_dates={day})
    )
    totals = book.cause_totals("usage_accrual")
    assert totals == {
        "c1:m1:2026-10-01": CauseTotal(
            revisions=2,
            amount_by_account={
                "customer:c1:unbilled_receivable": Decimal(5),
                "platform:usage_revenue": Decimal(-5),
            },
            currency="usd",
        )
    }
    assert book.cause_totals("other") == {}


def test_embedded_server_refuses_long_data_dirs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="characters"):
        embedded_ledger_url(tmp_path / ("x" * 100))

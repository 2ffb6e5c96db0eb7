"""Posting: balanced batches, idempotent replays, conflicts that write nothing, accounts."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest

from ledger import (
    Account,
    CauseTotal,
    Entry,
    Ledger,
    LedgerBalanceError,
    LedgerConflictError,
    LedgerValidationError,
    PostResult,
    Transaction,
)
from ledger.usage_accruals import RatedSlot, plan_usage_accruals
from tests.ledger.helpers import WHEN, transfer


def test_a_balanced_post_moves_both_accounts(book: Ledger) -> None:
    result = book.post_many(
        [
            transfer("t1", "customer:c1:unbilled_receivable", "platform:usage_revenue", "2.25"),
            transfer("t2", "customer:c1:unbilled_receivable", "platform:usage_revenue", "0.0001"),
            transfer("t3", "cash:eur", "platform:usage_revenue:eur", "7", currency="eur"),
        ]
    )
    assert result == PostResult(created=3, existing=0)
    assert book.balance("customer:c1:unbilled_receivable", "usd") == Decimal("2.2501")
    assert book.balance("platform:usage_revenue", "usd") == Decimal("-2.2501")
    assert book.balance("platform:usage_revenue:eur", "eur") == Decimal(-7)
    assert book.balance("nobody", "usd") == 0
    report = book.verify()
    assert (report.transactions, report.entries, report.unbalanced_transactions) == (3, 6, [])
    assert report.ok


def test_an_empty_batch_posts_nothing(book: Ledger) -> None:
    assert book.post_many([]) == PostResult(created=0, existing=0)
    assert book.verify().transactions == 0


def test_replaying_a_key_with_the_same_content_writes_nothing(book: Ledger) -> None:
    first = book.post_many([transfer("t1", "a", "b", "1.50"), transfer("t2", "a", "b", "2")])
    again = book.post_many([transfer("t1", "a", "b", "1.5"), transfer("t3", "a", "b", "3")])
    assert first == PostResult(created=2, existing=0)
    assert again == PostResult(created=1, existing=1)  # 1.5 is 1.50 spelled otherwise
    assert book.balance("a", "usd") == Decimal("6.5")
    assert book.verify().entries == 6


def test_a_key_twice_in_one_batch_is_posted_once(book: Ledger) -> None:
    result = book.post_many([transfer("t1", "a", "b", "1"), transfer("t1", "a", "b", "1.0")])
    assert result == PostResult(created=1, existing=1)
    assert book.balance("a", "usd") == 1
    with pytest.raises(LedgerConflictError, match="t2"):
        book.post_many([transfer("t2", "a", "b", "1"), transfer("t2", "a", "b", "2")])
    assert book.verify().transactions == 1


def test_a_whole_batch_replayed_is_a_no_op_unless_one_transaction_differs(book: Ledger) -> None:
    batch = [transfer(f"t{n}", "a", "b", str(n)) for n in range(1, 6)]
    assert book.post_many(batch) == PostResult(created=5, existing=0)
    # Every key posted with this content: the replay is settled by one digest of the batch.
    assert book.post_many(reversed(batch)) == PostResult(created=0, existing=5)
    # Every key posted, one with other content (or a key twice, differing): refused, naming it.
    changed = [*batch[:2], transfer("t3", "a", "b", "3.01"), *batch[3:]]
    with pytest.raises(LedgerConflictError, match="t3"):
        book.post_many(changed)
    with pytest.raises(LedgerConflictError, match="t5"):
        book.post_many([*batch[:4], transfer("t5", "a", "b", "6"), batch[4]])
    assert book.verify().transactions == 5
    assert book.balance("a", "usd") == 15


def test_same_key_other_content_is_refused_and_nothing_is_written(book: Ledger) -> None:
    book.post_many([transfer("t1", "a", "b", "1")])
    before = book.verify()
    with pytest.raises(LedgerConflictError, match="t1") as raised:
        book.post_many(
            [
                transfer("t0", "new", "b", "5"),
                transfer("t1", "a", "b", "2"),
                transfer("t9", "a", "b", "5"),
            ]
        )
    assert "new key" in str(raised.value)
    after = book.verify()
    assert after == before
    assert book.balance("a", "usd") == 1
    assert book.balance("new", "usd") == 0  # its account was not opened either
    # The ledger still works after the refused batch.
    assert book.post_many([transfer("t0", "a", "b", "5")]).created == 1


def test_the_conflict_names_every_conflicting_key(book: Ledger) -> None:
    book.post_many([transfer(f"k{n}", "a", "b", "1") for n in range(3)])
    with pytest.raises(LedgerConflictError, match="k0, k1, k2"):
        book.post_many([transfer(f"k{n}", "a", "b", "2") for n in range(3)])


def test_amounts_keep_all_38_digits(book: Ledger) -> None:
    big = Decimal("12345678901234567890123456.123456789012")
    almost = Decimal("12345678901234567890123456.123456789011")

    def exact_transfer(key: str, amount: Decimal) -> Transaction:
        # copy_negate is exact; unary minus would round to the default context's 28 digits.
        entries = (Entry("a", amount, "usd"), Entry("b", amount.copy_negate(), "usd"))
        return Transaction(key, "k", "c", "i", WHEN, entries)

    book.post_many([exact_transfer("big", big)])
    assert book.balance("a", "usd") == big
    assert book.balance("b", "usd") == big.copy_negate()
    assert book.post_many([exact_transfer("big", Decimal(str(big) + "000"))]).existing == 1
    with pytest.raises(LedgerConflictError, match="big"):
        book.post_many([exact_transfer("big", almost)])
    assert book.verify(recompute_hashes=True).ok  # stored amounts hash as posted


def test_an_account_holds_one_currency(book: Ledger) -> None:
    book.post_many([transfer("t1", "a", "b", "1")])
    with pytest.raises(LedgerValidationError, match="a holds usd, not eur"):
        book.post_many([transfer("t2", "a", "c", "1", currency="eur")])
    with pytest.raises(LedgerValidationError, match="one currency"):
        book.post_many([transfer("t3", "x", "y", "1"), transfer("t4", "x", "y", "1", "eur")])
    assert book.verify().transactions == 1


def test_accounts_are_opened_once_and_never_change(book: Ledger) -> None:
    revenue = Account("platform:usage_revenue", "usd", normal_side="credit")
    receivable = Account("customer:c1:unbilled_receivable", "usd", normal_side="debit")
    assert book.open_accounts([revenue, receivable]) == PostResult(created=2, existing=0)
    assert book.open_accounts([revenue]) == PostResult(created=0, existing=1)
    changed = Account("platform:usage_revenue", "usd", normal_side="debit")
    with pytest.raises(LedgerConflictError, match="platform:usage_revenue"):
        book.open_accounts([Account("fresh", "usd", normal_side="debit"), changed])
    assert book.open_accounts([]) == PostResult(created=0, existing=0)
    # Nothing of the refused call was opened.
    assert book.open_accounts([Account("fresh", "usd", normal_side="debit")]).created == 1


def test_a_guarded_account_cannot_go_below_zero(book: Ledger) -> None:
    book.open_accounts(
        [
            Account("wallet", "usd", normal_side="debit", must_not_go_negative=True),
            Account("deposits", "usd", normal_side="credit", must_not_go_negative=True),
        ]
    )
    book.post_many([transfer("fund", "wallet", "deposits", "10")])
    with pytest.raises(LedgerBalanceError, match="wallet must not go negative"):
        book.post_many([transfer("spend", "shop", "wallet", "10.01")])
    book.post_many([transfer("spend", "shop", "wallet", "10")])  # down to exactly zero is fine
    with pytest.raises(LedgerBalanceError, match="deposits must not go negative"):
        book.post_many([transfer("refund", "deposits", "cash", "10.000000000001")])
    assert book.balance("wallet", "usd") == 0
    assert book.balance("deposits", "usd") == -10
    # Within one batch only the end state counts: spend after funding in the same commit.
    book.post_many(
        [transfer("spend2", "shop", "wallet", "3"), transfer("fund2", "wallet", "deposits", "3")]
    )
    assert book.verify().ok


def test_ledger_needs_an_autocommit_connection(book: Ledger, ledger_url: str) -> None:
    with psycopg.connect(ledger_url) as conn, pytest.raises(ValueError, match="autocommit"):
        Ledger(conn)
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        assert Ledger(conn).verify().transactions == 0


def test_post_many_takes_transactions_only(book: Ledger) -> None:
    with pytest.raises(TypeError, match="Transaction"):
        book.post_many([("t1", "a", "b")])  # type: ignore[list-item]


def test_cause_totals_count_revisions_and_sum_per_account(book: Ledger) -> None:
    day = datetime(2026, 10, 1, tzinfo=UTC).date()
    slot = RatedSlot("c1", "m1", day, "usd", Decimal("3.333"))
    first = plan_usage_accruals(
        [slot], posted=book.cause_totals("usage_accrual"), usage_dates={day}
    )
    assert [t.key for t in first] == ["usage_accrual:c1:m1:2026-10-01:r1"]
    book.post_many(first)
    again = plan_usage_accruals(
        [slot], posted=book.cause_totals("usage_accrual"), usage_dates={day}
    )
    assert again == []
    later = RatedSlot("c1", "m1", day, "usd", Decimal("5"))
    book.post_many(
        plan_usage_accruals([later], posted=book.cause_totals("usage_accrual"), usage_dates={day})
    )
    assert book.cause_totals("usage_accrual") == {
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


def test_cause_totals_refuse_a_cause_in_several_currencies(book: Ledger) -> None:
    entries = (
        Entry("a", Decimal(1), "usd"),
        Entry("b", Decimal(-1), "usd"),
        Entry("c", Decimal(1), "eur"),
        Entry("d", Decimal(-1), "eur"),
    )
    book.post_many([Transaction("fx", "fx", "trade", "trade1", WHEN, entries)])
    with pytest.raises(ValueError, match="trade1"):
        book.cause_totals("fx")

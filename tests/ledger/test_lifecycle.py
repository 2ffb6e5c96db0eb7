"""The posting rules end to end: the worked example of docs/ledger.md, to the exact decimal."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import psycopg
import pytest

from ledger import DunningEvent, Ledger, LedgerBalanceError, LedgerConflictError, Transaction
from ledger.errors import LedgerValidationError
from ledger.postings import (
    CreditKind,
    adjustment,
    credit_consumption,
    credit_expiry,
    credit_grant,
    invoice_finalisation,
    payment_received,
)
from ledger.usage_accruals import RatedSlot, plan_usage_accruals

USD = "usd"
OCT_1 = datetime(2026, 10, 1, tzinfo=UTC)
OCT_15 = datetime(2026, 10, 15, tzinfo=UTC)
NOV_1 = datetime(2026, 11, 1, tzinfo=UTC)
NOV_5 = datetime(2026, 11, 5, tzinfo=UTC)
DEC_31 = datetime(2026, 12, 31, tzinfo=UTC)


def d(text: str) -> Decimal:
    return Decimal(text)


def accrue(book: Ledger, amount: str) -> None:
    slot = RatedSlot("acme", "nimbus_large_input", date(2026, 10, 1), USD, d(amount))
    book.post_many(plan_usage_accruals([slot], posted={}, usage_dates={slot.usage_date}))


def grants() -> list[Transaction]:
    return [
        credit_grant(
            grant_id="promo-1",
            customer_id="acme",
            credit_kind=CreditKind.PROMOTIONAL,
            amount_minor=d("500"),
            currency=USD,
            effective_at=OCT_1,
            actor="sales@example.com",
            reason="launch promotion",
        ),
        credit_grant(
            grant_id="prepaid-1",
            customer_id="acme",
            credit_kind=CreditKind.PREPAID,
            amount_minor=d("1000"),
            currency=USD,
            effective_at=OCT_1,
            actor="checkout",
            reason="credit pack purchase",
        ),
    ]


def balances(book: Ledger, **when: datetime) -> dict[str, Decimal]:
    return {account: amount for (account, _), amount in book.balances(**when).items()}


def test_the_worked_example(book: Ledger) -> None:
    accrue(book, "1234.5678")
    book.post_many(grants())
    book.post_many(
        [
            credit_consumption(
                grant_id="promo-1",
                customer_id="acme",
                credit_kind=CreditKind.PROMOTIONAL,
                consumed_by="inv-oct",
                amount_minor=d("500"),
                currency=USD,
                effective_at=OCT_15,
            ),
            credit_consumption(
                grant_id="prepaid-1",
                customer_id="acme",
                credit_kind=CreditKind.PREPAID,
                consumed_by="inv-oct",
                amount_minor=d("300"),
                currency=USD,
                effective_at=OCT_15,
            ),
        ]
    )
    # 1234.5678 - 800 = 434.5678 unbilled, invoiced as 435 whole cents (half away from zero).
    book.post_many(
        [
            invoice_finalisation(
                invoice_id="inv-oct",
                customer_id="acme",
                unbilled_minor=d("434.5678"),
                invoiced_minor=d("435"),
                currency=USD,
                effective_at=NOV_1,
            )
        ]
    )
    book.record_dunning_event(DunningEvent("evt_1", "inv-oct", "acme", "payment_failed", 1, NOV_1))
    book.post_many(
        [
            adjustment(
                adjustment_id="req-7",
                customer_id="acme",
                amount_minor=d("35"),
                currency=USD,
                effective_at=NOV_5,
                actor="support@example.com",
                reason="outage goodwill",
            ),
            payment_received(
                payment_id="pi_1",
                invoice_id="inv-oct",
                customer_id="acme",
                amount_minor=d("400"),
                currency=USD,
                effective_at=NOV_5,
            ),
            credit_expiry(
                grant_id="prepaid-1",
                customer_id="acme",
                credit_kind=CreditKind.PREPAID,
                remaining_minor=d("700"),
                currency=USD,
                effective_at=DEC_31,
            ),
        ]
    )
    book.record_dunning_event(DunningEvent("evt_2", "inv-oct", "acme", "recovered", 2, NOV_5))

    assert balances(book) == {
        "customer:acme:prepaid_credit": 0,
        "customer:acme:promotional_credit": 0,
        "customer:acme:receivable": 0,
        "customer:acme:unbilled_receivable": 0,
        "platform:adjustments": d("35"),
        "platform:credit_breakage": d("-700"),
        "platform:promotional_expense": d("500"),
        "platform:rounding": d("-0.4322"),
        "platform:stripe_clearing": d("1400"),
        "platform:usage_revenue": d("-1234.5678"),
    }
    assert sum(balances(book).values()) == 0
    # Business time: on 2 November the invoice was open and the prepaid credit not expired.
    on_nov_2 = balances(book, as_of=datetime(2026, 11, 2, tzinfo=UTC))
    assert on_nov_2["customer:acme:receivable"] == d("435")
    assert on_nov_2["customer:acme:prepaid_credit"] == d("-700")
    state = book.dunning_state("inv-oct")
    assert state is not None and state.state == "recovered"
    assert book.verify(recompute_hashes=True).ok


def test_system_time_shows_what_the_ledger_knew(book: Ledger, raw: psycopg.Connection) -> None:
    accrue(book, "10")
    (between,) = raw.execute("select clock_timestamp()").fetchone()
    book.post_many(grants())
    known_then = balances(book, known_at=between)
    assert "customer:acme:prepaid_credit" not in known_then
    assert known_then["customer:acme:unbilled_receivable"] == d("10")
    assert balances(book)["customer:acme:prepaid_credit"] == d("-1000")
    assert book.balances(account_prefix="customer:acme:unbilled") == {
        ("customer:acme:unbilled_receivable", USD): d("10")
    }


def test_credit_cannot_be_spent_twice_over(book: Ledger) -> None:
    book.post_many(grants())
    spend = credit_consumption(
        grant_id="promo-1",
        customer_id="acme",
        credit_kind=CreditKind.PROMOTIONAL,
        consumed_by="inv-oct",
        amount_minor=d("500.01"),
        currency=USD,
        effective_at=OCT_15,
    )
    with pytest.raises(LedgerBalanceError, match="promotional_credit must not go negative"):
        book.post_many([spend])


def test_rules_refuse_what_would_be_wrong() -> None:
    with pytest.raises(LedgerValidationError, match="positive"):
        payment_received(
            payment_id="p",
            invoice_id="i",
            customer_id="c",
            amount_minor=d("-1"),
            currency=USD,
            effective_at=OCT_1,
        )
    with pytest.raises(LedgerValidationError, match="whole number"):
        payment_received(
            payment_id="p",
            invoice_id="i",
            customer_id="c",
            amount_minor=d("1.5"),
            currency=USD,
            effective_at=OCT_1,
        )
    with pytest.raises(LedgerValidationError, match="actor"):
        adjustment(
            adjustment_id="a",
            customer_id="c",
            amount_minor=d("1"),
            currency=USD,
            effective_at=OCT_1,
            actor="",
            reason="why",
        )
    with pytest.raises(ValueError, match="contain no ':'"):
        credit_grant(
            grant_id="g",
            customer_id="a:b",
            credit_kind=CreditKind.PREPAID,
            amount_minor=d("1"),
            currency=USD,
            effective_at=OCT_1,
            actor="x",
            reason="y",
        )


def test_dunning_events_are_recorded_once(book: Ledger) -> None:
    event = DunningEvent("evt_1", "inv", "acme", "payment_failed", 1, NOV_1, {"code": "card"})
    assert book.record_dunning_event(event) is True
    assert book.record_dunning_event(event) is False  # a redelivered webhook
    with pytest.raises(LedgerConflictError, match="other content"):
        book.record_dunning_event(DunningEvent("evt_1", "inv", "acme", "recovered", 1, NOV_1))
    with pytest.raises(LedgerValidationError, match="not one of"):
        DunningEvent("evt_9", "inv", "acme", "paid?", 1, NOV_1)

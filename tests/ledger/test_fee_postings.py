"""Flat fees and prorations posted to the real ledger by revisions: a re-run posts nothing, a
changed line posts its difference, a line that is gone is brought back to zero within the
periods still invoiced, and the balances are the invoiced lines'."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from ledger import Ledger
from ledger.fee_postings import SUBSCRIPTION_FEE_KIND, FeeLine, fee_line_id, plan_fee_postings
from ledger.usage_accruals import unbilled_receivable_account

OCT, NOV = date(2026, 10, 1), date(2026, 11, 1)
CHANGE = datetime(2026, 10, 16, 12, tzinfo=UTC)


def line(subscription: str, line_type: str, amount: str, period: date = OCT) -> FeeLine:
    return FeeLine(
        customer_id="acme",
        subscription_id=subscription,
        billing_period_start_date=period,
        line_type=line_type,
        currency="usd",
        amount_minor=Decimal(amount),
        effective_at=CHANGE
        if line_type != "flat_fee"
        else datetime(period.year, period.month, 1, tzinfo=UTC),
    )


# Stripe's example: 10 USD to 20 USD at mid-period, after October's advance fee of 10 USD.
OCTOBER = [
    line("sub_basic", "flat_fee", "1000"),
    line("sub_basic", "proration_credit", "-500"),
    line("sub_plus", "proration_charge", "1000"),
]


def post(book: Ledger, lines: list[FeeLine], periods: set[date]) -> list[str]:
    planned = plan_fee_postings(
        lines, posted=book.cause_totals(SUBSCRIPTION_FEE_KIND), periods=periods
    )
    book.post_many(planned)
    return [t.key for t in planned]


def test_fee_lines_post_once_and_then_only_their_changes(
    new_database: Callable[[], str],
) -> None:
    with Ledger.connect(new_database()) as book:
        keys = post(book, OCTOBER, {OCT})
        assert keys == [
            "subscription_fee:acme:sub_basic:2026-10-01:flat_fee:r1",
            "subscription_fee:acme:sub_basic:2026-10-01:proration_credit:r1",
            "subscription_fee:acme:sub_plus:2026-10-01:proration_charge:r1",
        ]
        receivable = unbilled_receivable_account("acme")
        assert book.balance(receivable, "usd") == Decimal("1500")
        assert book.balance("platform:subscription_revenue", "usd") == Decimal("-1500")
        assert post(book, OCTOBER, {OCT}) == []  # a re-run posts nothing

        # The change is found to have been at another second: the prorations change, and
        # November's advance fee on the new plan appears.
        later = [
            OCTOBER[0],
            line("sub_basic", "proration_credit", "-400"),
            line("sub_plus", "proration_charge", "800"),
            line("sub_plus", "flat_fee", "2000", NOV),
        ]
        assert post(book, later, {OCT, NOV}) == [
            "subscription_fee:acme:sub_basic:2026-10-01:proration_credit:r2",
            "subscription_fee:acme:sub_plus:2026-10-01:proration_charge:r2",
            "subscription_fee:acme:sub_plus:2026-11-01:flat_fee:r1",
        ]
        assert book.balance(receivable, "usd") == Decimal("1000") - 400 + 800 + 2000
        assert book.verify().unbalanced_transactions == []

        # The plan change is gone (a corrected export): its lines return to zero, but only in
        # the periods still invoiced; November is no longer in the warehouse and stays.
        assert post(book, [OCTOBER[0]], {OCT}) == [
            "subscription_fee:acme:sub_basic:2026-10-01:proration_credit:r3",
            "subscription_fee:acme:sub_plus:2026-10-01:proration_charge:r3",
        ]
        assert book.balance(receivable, "usd") == Decimal("1000") + 2000


def test_a_line_type_that_is_not_a_fee_is_refused() -> None:
    with pytest.raises(ValueError, match="not a fee line type"):
        fee_line_id("acme", "sub_1", OCT, "usage")

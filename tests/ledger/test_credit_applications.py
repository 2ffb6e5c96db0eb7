"""Credit applied to usage, posted to the real ledger by revisions: re-runs post nothing, a
late event posts the differences (expiry included), and the balances end where a clean run
over the final rating puts them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal

from ledger import Ledger
from ledger.credit_applications import (
    CREDIT_APPLICATION_KIND,
    CREDIT_EXPIRY_KIND,
    LedgerGrant,
    plan_credit_postings,
)
from ledger.postings import CreditKind, credit_grant
from ledger.usage_accruals import RatedSlot, plan_usage_accruals
from pricing.credits import CreditGrant, UsageCharge, apply_credits

USD = "usd"
PROMO = LedgerGrant(
    CreditGrant(
        grant_id="api-promo:1",  # grant ids may hold ':'
        customer_id="acme",
        currency=USD,
        amount_minor=Decimal("50"),
        effective_at=datetime(2026, 10, 1, 9, tzinfo=UTC),
        expires_at=datetime(2026, 10, 4, tzinfo=UTC),
        priority=1,
    ),
    CreditKind.PROMOTIONAL,
)
PREPAID = LedgerGrant(
    CreditGrant(
        grant_id="api-prepaid-1",
        customer_id="acme",
        currency=USD,
        amount_minor=Decimal("100"),
        effective_at=datetime(2026, 10, 1, tzinfo=UTC),
        priority=2,
    ),
    CreditKind.PREPAID,
)
GRANTS = [PROMO, PREPAID]


def rated(amounts: dict[tuple[str, int], str]) -> list[UsageCharge]:
    return [
        UsageCharge("acme", meter, date(2026, 10, day), date(2026, 10, 1), USD, Decimal(amount))
        for (meter, day), amount in amounts.items()
    ]


def bill(book: Ledger, charges: list[UsageCharge], rated_through: date) -> int:
    """One run: accrue the usage, apply credit, post the differences; transactions posted."""
    slots = [
        RatedSlot(c.customer_id, c.meter_id, c.usage_date, c.currency, c.amount_minor)
        for c in charges
    ]
    accruals = plan_usage_accruals(
        slots,
        posted=book.cause_totals("usage_accrual"),
        usage_dates={c.usage_date for c in charges},
    )
    credit = plan_credit_postings(
        GRANTS,
        apply_credits([g.terms for g in GRANTS], charges, rated_through=rated_through),
        posted_applications=book.cause_totals(CREDIT_APPLICATION_KIND),
        posted_expiries=book.cause_totals(CREDIT_EXPIRY_KIND),
    )
    return book.post_many([*accruals, *credit]).created


def grant_all(book: Ledger) -> None:
    book.post_many(
        credit_grant(
            grant_id=g.terms.grant_id,
            customer_id="acme",
            credit_kind=g.credit_kind,
            amount_minor=g.terms.amount_minor,
            currency=USD,
            effective_at=g.terms.effective_at,
            actor="support@example.com",
            reason="test",
        )
        for g in GRANTS
    )


def balances(book: Ledger) -> dict[str, Decimal]:
    accounts = [
        "customer:acme:unbilled_receivable",
        "customer:acme:promotional_credit",
        "customer:acme:prepaid_credit",
        "platform:credit_breakage",
        "platform:promotional_expense",
        "platform:usage_revenue",
    ]
    return {account: book.balance(account, USD) for account in accounts}


def test_credit_pays_usage_expires_and_a_late_event_posts_only_the_differences(
    new_database: Callable[[], str],
) -> None:
    first = rated({("requests", 1): "30", ("requests", 2): "40", ("tokens", 5): "20.5"})
    with Ledger.connect(new_database()) as book:
        grant_all(book)
        assert bill(book, first, date(2026, 10, 5)) > 0
        assert balances(book) == {
            # 90.5 of usage, all paid by credit: promo 50 (then expired on the 4th), prepaid 40.5.
            "customer:acme:unbilled_receivable": Decimal(0),
            "customer:acme:promotional_credit": Decimal(0),
            "customer:acme:prepaid_credit": Decimal("-59.5"),
            "platform:credit_breakage": Decimal(0),
            "platform:promotional_expense": Decimal(50),
            "platform:usage_revenue": Decimal("-90.5"),
        }
        # The same rating again: nothing to post.
        assert bill(book, first, date(2026, 10, 5)) == 0
        # A late event lowers the 1st (a correction) and raises the 5th: revisions only.
        corrected = rated({("requests", 1): "10", ("requests", 2): "40", ("tokens", 5): "80"})
        assert bill(book, corrected, date(2026, 10, 5)) > 0
        assert book.verify().ok
        after_late_event = balances(book)

    with Ledger.connect(new_database()) as clean:
        grant_all(clean)
        bill(clean, corrected, date(2026, 10, 5))
        assert balances(clean) == after_late_event
        # Promo pays 10 + 40 by the 2nd and expires empty; prepaid pays 80 of the 5th.
        assert balances(clean) == {
            "customer:acme:unbilled_receivable": Decimal(0),
            "customer:acme:promotional_credit": Decimal(0),
            "customer:acme:prepaid_credit": Decimal(-20),
            "platform:credit_breakage": Decimal(0),
            "platform:promotional_expense": Decimal(50),
            "platform:usage_revenue": Decimal(-130),
        }


def test_usage_beyond_the_credit_stays_owed_and_breakage_is_booked_at_expiry(
    new_database: Callable[[], str],
) -> None:
    only_prepaid_expiring = LedgerGrant(
        CreditGrant(
            "api-p2",
            "acme",
            USD,
            Decimal(25),
            datetime(2026, 10, 2, tzinfo=UTC),
            expires_at=datetime(2026, 10, 3, tzinfo=UTC),
        ),
        CreditKind.PREPAID,
    )
    charges = rated({("requests", 1): "30", ("requests", 2): "10", ("requests", 3): "7"})
    with Ledger.connect(new_database()) as book:
        book.post_many(
            [
                credit_grant(
                    grant_id="api-p2",
                    customer_id="acme",
                    credit_kind=CreditKind.PREPAID,
                    amount_minor=Decimal(25),
                    currency=USD,
                    effective_at=datetime(2026, 10, 2, tzinfo=UTC),
                    actor="finance@example.com",
                    reason="prepaid",
                )
            ]
        )
        slots = [
            RatedSlot(c.customer_id, c.meter_id, c.usage_date, c.currency, c.amount_minor)
            for c in charges
        ]
        book.post_many(
            plan_usage_accruals(slots, posted={}, usage_dates={c.usage_date for c in charges})
        )
        allocation = apply_credits(
            [only_prepaid_expiring.terms], charges, rated_through=date(2026, 10, 3)
        )
        book.post_many(
            plan_credit_postings(
                [only_prepaid_expiring],
                allocation,
                posted_applications={},
                posted_expiries={},
            )
        )
        # It pays the 2nd only (10), then expires on the 3rd holding 15: breakage revenue.
        assert book.balance("customer:acme:unbilled_receivable", USD) == Decimal(37)
        assert book.balance("customer:acme:prepaid_credit", USD) == Decimal(0)
        assert book.balance("platform:credit_breakage", USD) == Decimal(-15)
        assert book.verify().ok

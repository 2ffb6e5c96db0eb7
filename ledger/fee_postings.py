"""Flat fees and their prorations as ledger postings that carry only what has changed.

A *fee line* is one line of a subscription's flat fee in a billing period (``flat_fee``,
``proration_charge`` or ``proration_credit``; ``invoice_lines``/``subscription_fee_lines``). It
is posted as invoiced, each line rounded on its own by the one rule, because Stripe bills each
as its own invoice item in whole cents: the customer's unbilled receivable is debited and
subscription revenue credited (a proration credit the other way round). Like usage accruals,
the next revision of a line posts the difference from what the ledger holds, so a re-run posts
nothing and a changed line (a plan change found later) posts only its change. Keys are derived
from the line: ``subscription_fee:<customer>:<subscription>:<period start>:<line type>:r<n>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from ledger.accounts import PlatformAccount, platform_account
from ledger.model import Transaction
from ledger.revisions import next_revision
from ledger.store import CauseTotal
from ledger.usage_accruals import accrual_effective_at, unbilled_receivable_account

SUBSCRIPTION_FEE_KIND = "subscription_fee"
FEE_LINE_CAUSE = "subscription_fee_line"
FEE_LINE_TYPES = ("flat_fee", "proration_charge", "proration_credit")


@dataclass(frozen=True)
class FeeLine:
    """One fee line as invoiced (``amount_minor``: whole minor units, negative for a credit)."""

    customer_id: str
    subscription_id: str
    billing_period_start_date: date
    line_type: str
    currency: str
    amount_minor: Decimal
    effective_at: datetime  # the period's start (a flat fee) or the change instant (a proration)

    @property
    def cause_id(self) -> str:
        return fee_line_id(
            self.customer_id, self.subscription_id, self.billing_period_start_date, self.line_type
        )


def fee_line_id(customer_id: str, subscription_id: str, period_start: date, line_type: str) -> str:
    if line_type not in FEE_LINE_TYPES:
        raise ValueError(f"{line_type!r} is not a fee line type; expected one of {FEE_LINE_TYPES}.")
    return f"{customer_id}:{subscription_id}:{period_start.isoformat()}:{line_type}"


def plan_fee_postings(
    lines: Iterable[FeeLine],
    *,
    posted: Mapping[str, CauseTotal],
    periods: set[date],
) -> list[Transaction]:
    """The transactions that bring the ledger to ``lines``, for the billing ``periods`` they
    cover: a line of those periods posted before but no longer there is brought back to zero;
    lines of other periods are left alone (the warehouse no longer rates them)."""
    wanted = {line.cause_id: line for line in lines}
    transactions = []
    for cause_id, line in sorted(wanted.items()):
        transaction = _difference(line, line.amount_minor, posted.get(cause_id))
        if transaction is not None:
            transactions.append(transaction)
    for cause_id, total in sorted(posted.items()):
        if cause_id in wanted or _period_of(cause_id) not in periods:
            continue
        gone = _line_of(cause_id, total)
        transaction = _difference(gone, Decimal(0), total)
        if transaction is not None:
            transactions.append(transaction)
    return transactions


def _period_of(cause_id: str) -> date:
    return date.fromisoformat(cause_id.rsplit(":", 2)[1])


def _line_of(cause_id: str, total: CauseTotal) -> FeeLine:
    """A posted line that is gone, rebuilt from its cause id (its effective time: the period's
    start, where a line being withdrawn is best shown)."""
    rest, period, line_type = cause_id.rsplit(":", 2)
    customer_id, subscription_id = rest.rsplit(":", 1)
    start = date.fromisoformat(period)
    return FeeLine(
        customer_id=customer_id,
        subscription_id=subscription_id,
        billing_period_start_date=start,
        line_type=line_type,
        currency=total.currency,
        amount_minor=Decimal(0),
        effective_at=accrual_effective_at(start),  # the period's first instant, UTC
    )


def _difference(line: FeeLine, invoiced: Decimal, posted: CauseTotal | None) -> Transaction | None:
    return next_revision(
        kind=SUBSCRIPTION_FEE_KIND,
        cause_type=FEE_LINE_CAUSE,
        cause_id=line.cause_id,
        target_minor=invoiced,
        posted=posted,
        debited=unbilled_receivable_account(line.customer_id),
        credited=platform_account(PlatformAccount.SUBSCRIPTION_REVENUE),
        currency=line.currency,
        effective_at=line.effective_at,
        metadata={
            "customer_id": line.customer_id,
            "subscription_id": line.subscription_id,
            "billing_period_start_date": line.billing_period_start_date.isoformat(),
            "line_type": line.line_type,
        },
        target_label="invoiced_amount_minor",
    )

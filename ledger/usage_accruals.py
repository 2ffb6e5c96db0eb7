"""Turn rated usage into ledger transactions that post only what has changed.

A *usage slot* is one customer, meter and usage date. The ledger already holds zero or more
revisions for a slot; the amount rated now minus the amount posted so far is the next revision's
amount. Re-running with the same rating therefore posts nothing, and late usage posts the
difference, never a second copy. Keys are derived from the slot and revision number only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal

from ledger.model import Transaction
from ledger.revisions import next_revision
from ledger.store import CauseTotal

USAGE_ACCRUAL_KIND = "usage_accrual"
USAGE_SLOT_CAUSE = "usage_slot"
USAGE_REVENUE_ACCOUNT = "platform:usage_revenue"


def unbilled_receivable_account(customer_id: str) -> str:
    return f"customer:{customer_id}:unbilled_receivable"


@dataclass(frozen=True)
class RatedSlot:
    """The exact amount rated for one slot, as ``billable_usage_daily`` says."""

    customer_id: str
    meter_id: str
    usage_date: date
    currency: str
    amount_minor: Decimal

    @property
    def slot_id(self) -> str:
        return slot_id(self.customer_id, self.meter_id, self.usage_date)


def accrual_effective_at(usage_date: date) -> datetime:
    """A usage date's accruals take effect at its first instant (UTC)."""
    return datetime.combine(usage_date, time(0), tzinfo=UTC)


def slot_id(customer_id: str, meter_id: str, usage_date: date) -> str:
    return f"{customer_id}:{meter_id}:{usage_date.isoformat()}"


def _parse_slot_id(value: str) -> tuple[str, str, date]:
    customer_id, meter_id, day = value.rsplit(":", 2)
    return customer_id, meter_id, date.fromisoformat(day)


def plan_usage_accruals(
    rated_slots: Iterable[RatedSlot],
    *,
    posted: Mapping[str, CauseTotal],
    usage_dates: set[date],
) -> list[Transaction]:
    """The transactions that bring the ledger to the rated amounts for ``usage_dates``.

    Slots of those dates that were posted but are no longer rated are brought back to zero.
    """
    wanted = {slot.slot_id: slot for slot in rated_slots if slot.usage_date in usage_dates}
    transactions: list[Transaction] = []
    for cause_id, slot in sorted(wanted.items()):
        transaction = _difference(cause_id, slot.currency, slot.amount_minor, posted.get(cause_id))
        if transaction is not None:
            transactions.append(transaction)
    for cause_id, total in sorted(posted.items()):
        _, _, usage_date = _parse_slot_id(cause_id)
        if cause_id in wanted or usage_date not in usage_dates:
            continue
        transaction = _difference(cause_id, total.currency, Decimal(0), total)
        if transaction is not None:
            transactions.append(transaction)
    return transactions


def _difference(
    cause_id: str, currency: str, rated_minor: Decimal, posted: CauseTotal | None
) -> Transaction | None:
    customer_id, meter_id, usage_date = _parse_slot_id(cause_id)
    return next_revision(
        kind=USAGE_ACCRUAL_KIND,
        cause_type=USAGE_SLOT_CAUSE,
        cause_id=cause_id,
        target_minor=rated_minor,
        posted=posted,
        debited=unbilled_receivable_account(customer_id),
        credited=USAGE_REVENUE_ACCOUNT,
        currency=currency,
        effective_at=accrual_effective_at(usage_date),
        metadata={
            "customer_id": customer_id,
            "meter_id": meter_id,
            "usage_date": usage_date.isoformat(),
        },
        target_label="rated_amount_minor",
    )

"""Credits consumed by usage: which grant pays how much of each day's usage charges.

Grants (prepaid or promotional, from the billing API) pay for usage charges as the charges
accrue, day by day, in UTC, the way Orb and Metronome draw credit down:

- A grant pays for the usage of every day at whose end it is in force: it took effect before
  the day ended and expires at or after the day's end. A grant given on the 10th at noon pays
  for the 10th; one expiring on the 20th at noon last pays for the 19th.
- Each day's charge of a meter is paid by the grants that may pay for it (same customer and
  currency; the meter among the grant's meters, or the grant names none) in the order
  *priority* (lower first), then *earliest expiry* (no expiry last), then earlier effect, then
  grant id; each pays what it still holds, the next one the rest. The pipeline takes which
  grants may pay for a slot, and in which order, from the dbt model ``int_credit_grant_slots``
  (whose unit tests pin these rules); ``reference_spending_orders`` is the same rule in Python,
  for the tests and for callers without a warehouse.
- A day's charge can be negative (a volume tier crossed mid-period lowers the period's amount):
  the decrease lowers what the customer owes first; credit comes back only when the credit
  applied to the meter in the period would otherwise exceed the meter's charges for the period,
  and then from the most recent application back (last applied, first returned), to the grant
  that paid, even if it has expired since: it then expires with that much more unused.
- What a grant holds when it expires is its expiry remainder (breakage for prepaid credit),
  recorded once the rating has reached its expiry.

So, for each customer, meter and billing period, 0 ≤ credit applied ≤ charges, and amount due
= charges − credit applied ≥ 0; no grant pays more than its amount; and a day's applications
depend only on that day and the days before it, so billing a new day never changes the past.
Amounts are exact ``Decimal`` minor units, never rounded here (invoices round, in one place).
``docs/pricing.md`` (*Credits*) works an example.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

ZERO = Decimal(0)
# A usage slot: customer, meter, usage date.
SlotKey = tuple[str, str, date]


def end_of_day(day: date) -> datetime:
    """The instant a UTC day ends (the next day's first instant)."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC)


@dataclass(frozen=True)
class CreditGrant:
    """An approved grant's terms (``api.credit_grants``); ``meters`` empty: every meter."""

    grant_id: str
    customer_id: str
    currency: str
    amount_minor: Decimal
    effective_at: datetime
    expires_at: datetime | None = None
    priority: int = 100
    meters: frozenset[str] = frozenset()

    def pays_for(self, charge: UsageCharge) -> bool:
        """Whether this grant may pay for that day's charge (ignoring what it still holds)."""
        day_end = end_of_day(charge.usage_date)
        return (
            charge.customer_id == self.customer_id
            and charge.currency == self.currency
            and (not self.meters or charge.meter_id in self.meters)
            and self.effective_at < day_end
            and (self.expires_at is None or self.expires_at >= day_end)
        )

    @property
    def spending_order(self) -> tuple[int, bool, datetime, datetime, str]:
        never = datetime.max.replace(tzinfo=UTC)
        return (
            self.priority,
            self.expires_at is None,
            self.expires_at or never,
            self.effective_at,
            self.grant_id,
        )


@dataclass(frozen=True)
class UsageCharge:
    """One usage slot's exact daily amount (``billable_usage_daily.amount_minor_exact``)."""

    customer_id: str
    meter_id: str
    usage_date: date
    billing_period_start_date: date
    currency: str
    amount_minor: Decimal


@dataclass(frozen=True)
class CreditApplication:
    """What a grant paid for one slot; negative: credit returned to the grant that day."""

    grant_id: str
    customer_id: str
    meter_id: str
    usage_date: date
    billing_period_start_date: date
    currency: str
    amount_minor: Decimal


@dataclass(frozen=True)
class CreditExpiry:
    """What a grant still held when it expired (zero included: the grant is closed)."""

    grant_id: str
    customer_id: str
    currency: str
    expires_at: datetime
    remaining_minor: Decimal


@dataclass
class _Paid:
    grant_id: str
    amount_minor: Decimal


@dataclass(frozen=True)
class CreditAllocation:
    applications: tuple[CreditApplication, ...]
    expiries: tuple[CreditExpiry, ...]


def reference_spending_orders(
    grants: Iterable[CreditGrant], charges: Iterable[UsageCharge]
) -> dict[SlotKey, tuple[str, ...]]:
    """For each charge's slot, the ids of the grants that may pay for it, in the order they
    are drawn down: what ``int_credit_grant_slots`` computes in the warehouse."""
    by_customer: dict[str, list[CreditGrant]] = defaultdict(list)
    for grant in sorted(grants, key=lambda grant: grant.spending_order):
        by_customer[grant.customer_id].append(grant)
    return {
        (charge.customer_id, charge.meter_id, charge.usage_date): tuple(
            grant.grant_id for grant in by_customer[charge.customer_id] if grant.pays_for(charge)
        )
        for charge in charges
    }


def apply_credits(
    grants: Iterable[CreditGrant],
    charges: Iterable[UsageCharge],
    *,
    rated_through: date | None,
    spending_orders: Mapping[SlotKey, Sequence[str]] | None = None,
) -> CreditAllocation:
    """Every grant's applications to ``charges`` (all of each customer's rated days: a
    grant's balance depends on every day before), and the expiry remainders of the grants
    that expired by the end of ``rated_through`` (the last day rated).

    ``spending_orders`` gives, per slot, the grants that may pay for it in the order they are
    drawn down (the warehouse's ``int_credit_grant_slots``); by default the reference rule."""
    grants = list(grants)
    charges = list(charges)
    held = {grant.grant_id: grant.amount_minor for grant in grants}
    if len(held) != len(grants):
        raise ValueError("Credit grants must have distinct grant ids.")
    if spending_orders is None:
        spending_orders = reference_spending_orders(grants, charges)
    unknown = {g for order in spending_orders.values() for g in order} - held.keys()
    if unknown:
        raise ValueError(
            f"The spending orders name grants that are not among the grants: {sorted(unknown)}; "
            "read both from the same copy of the grants."
        )

    applied: dict[tuple[str, str, date], Decimal] = defaultdict(Decimal)
    charged: dict[tuple[str, str, str, date], Decimal] = defaultdict(Decimal)
    credited: dict[tuple[str, str, str, date], Decimal] = defaultdict(Decimal)
    # Per customer, currency, meter and period: what each grant paid, in the order applied.
    applied_in_period: dict[tuple[str, str, str, date], list[_Paid]] = defaultdict(list)
    slots: dict[tuple[str, str, date], UsageCharge] = {}

    for charge in sorted(charges, key=lambda c: (c.usage_date, c.customer_id, c.meter_id)):
        if not charge.amount_minor:
            continue
        period = (
            charge.customer_id,
            charge.currency,
            charge.meter_id,
            charge.billing_period_start_date,
        )
        charged[period] += charge.amount_minor
        if charge.amount_minor > 0:
            owed = charge.amount_minor
            slot = (charge.customer_id, charge.meter_id, charge.usage_date)
            for grant_id in spending_orders.get(slot, ()):
                if not owed:
                    break
                if held[grant_id] <= 0:
                    continue
                paid = min(owed, held[grant_id])
                held[grant_id] -= paid
                owed -= paid
                credited[period] += paid
                applied[(grant_id, charge.meter_id, charge.usage_date)] += paid
                slots[(grant_id, charge.meter_id, charge.usage_date)] = charge
                applied_in_period[period].append(_Paid(grant_id, paid))
        else:
            # Credit comes back only as far as the period's credit exceeds its charges.
            excess = credited[period] - max(charged[period], ZERO)
            stack = applied_in_period[period]
            while excess > 0:
                last = stack[-1]
                returned = min(excess, last.amount_minor)
                held[last.grant_id] += returned
                excess -= returned
                credited[period] -= returned
                applied[(last.grant_id, charge.meter_id, charge.usage_date)] -= returned
                slots[(last.grant_id, charge.meter_id, charge.usage_date)] = charge
                last.amount_minor -= returned
                if not last.amount_minor:
                    stack.pop()

    applications = tuple(
        CreditApplication(
            grant_id=grant_id,
            customer_id=slots[key].customer_id,
            meter_id=meter_id,
            usage_date=usage_date,
            billing_period_start_date=slots[key].billing_period_start_date,
            currency=slots[key].currency,
            amount_minor=amount,
        )
        for key, amount in sorted(applied.items())
        if amount
        for grant_id, meter_id, usage_date in [key]
    )
    rated_until = end_of_day(rated_through) if rated_through is not None else None
    expiries = tuple(
        CreditExpiry(
            grant_id=grant.grant_id,
            customer_id=grant.customer_id,
            currency=grant.currency,
            expires_at=grant.expires_at,
            remaining_minor=held[grant.grant_id],
        )
        for grant in sorted(grants, key=lambda grant: grant.grant_id)
        if grant.expires_at is not None
        and rated_until is not None
        and grant.expires_at <= rated_until
    )
    return CreditAllocation(applications=applications, expiries=expiries)

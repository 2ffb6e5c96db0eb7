"""Flat fees billed in advance, and their prorations to the second, like Stripe.

This is the reference implementation of ``dbt_project/models/intermediate/
int_subscription_fee_periods.sql`` and ``dbt_project/models/marts/subscription_fee_lines.sql``;
``docs/pricing.md`` (*Flat fees and prorations*) states the rules and works an example.

A plan's ``monthly_fee_minor`` is billed whole at the start of each billing period the fee runs
at (the customer's, by their billing-cycle anchor: ``pricing.periods``; calendar months, UTC,
without one). A fee that starts inside a period (a new or changed plan, the end of
a trial) is charged for the remaining time, and a fee that ends inside a period by a plan change
(or a cancellation, when prorated cancellations are chosen) is credited for the unused time:

    amount = fee × seconds / period_seconds

Exact amounts are fractions; the dbt mart keeps them to 12 decimal places, truncated toward zero
(``prorated_minor_exact``), and rounds each line on its own, half away from zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from fractions import Fraction

from pricing.periods import CALENDAR_MONTH_ANCHOR_DAY, anchor_day_of, billing_period_at

EXACT_PLACES = Decimal("0.000000000001")  # DECIMAL(38, 12), the money type of the dbt project
LINE_TYPES = ("flat_fee", "proration_charge", "proration_credit")


def prorated_fraction(fee_minor: int, *, seconds: int, period_seconds: int) -> Fraction:
    """The fee's share for ``seconds`` of a period of ``period_seconds``, exactly."""
    if not 0 <= seconds <= period_seconds or period_seconds <= 0:
        raise ValueError(f"{seconds} seconds of a {period_seconds}-second period")
    return Fraction(fee_minor * seconds, period_seconds)


def exact_minor(amount: Fraction) -> Decimal:
    """An exact amount to 12 decimal places, truncated toward zero: as the dbt macro
    ``prorated_minor_exact`` keeps it. Truncating never crosses a half minor unit, so
    rounding this gives what rounding the fraction would."""
    scaled = abs(amount.numerator) * 10**12 // amount.denominator
    magnitude = (Decimal(scaled) * EXACT_PLACES).quantize(EXACT_PLACES, rounding=ROUND_DOWN)
    return -magnitude if amount < 0 else magnitude


def round_to_minor_units(amount: Decimal | Fraction) -> int:
    """Half away from zero, the project's one rounding rule (dbt macro ``round_to_minor_units``)."""
    if isinstance(amount, Fraction):
        doubled = abs(amount) * 2
        magnitude = (doubled.numerator // doubled.denominator + 1) // 2
        return -magnitude if amount < 0 else magnitude
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))  # HALF_UP: away from zero


@dataclass(frozen=True)
class Subscription:
    """A subscription's fee history, as ``int_subscription_fee_periods`` derives it.

    ``billed_through`` is the start of the subscription's current period as exported: periods
    after the one containing it have not begun at Stripe. ``prorated_end``: its end is a plan
    change (a successor starts at ``ended_at``) or a prorated cancellation.
    """

    customer_id: str
    subscription_id: str
    plan_id: str
    monthly_fee_minor: int
    started_at: datetime
    billed_through: datetime | None
    ended_at: datetime | None = None
    trial_ends_at: datetime | None = None
    prorated_end: bool = False
    successor_subscription_id: str | None = None
    anchor_day: int = CALENDAR_MONTH_ANCHOR_DAY

    @property
    def fee_starts_at(self) -> datetime:
        return self.trial_ends_at or self.started_at


@dataclass(frozen=True)
class FeeLine:
    customer_id: str
    subscription_id: str
    billing_period_start_at: datetime
    billing_period_end_at: datetime
    line_type: str
    quantity_seconds: int
    period_seconds: int
    unit_amount_minor: int
    amount_fraction: Fraction

    @property
    def amount_minor_exact(self) -> Decimal:
        return exact_minor(self.amount_fraction)

    @property
    def amount_minor(self) -> int:
        return round_to_minor_units(self.amount_minor_exact)


def _seconds(start: datetime, end: datetime) -> int:
    return int((end - start).total_seconds())


def fee_periods(subscription: Subscription) -> list[tuple[datetime, datetime]]:
    """The billing periods a subscription owes its fee for (start, end)."""
    starts, ends = subscription.fee_starts_at, subscription.ended_at
    if ends is not None and starts >= ends:
        return []
    last = ends if ends is not None else subscription.billed_through
    if last is None:
        return []
    anchor_day = subscription.anchor_day
    last_period_start = billing_period_at(last, anchor_day)[0]
    periods = []
    period_start = billing_period_at(starts, anchor_day)[0]
    while period_start <= last_period_start and (ends is None or period_start < ends):
        period_end = billing_period_at(period_start, anchor_day)[1]
        periods.append((period_start, period_end))
        period_start = period_end
    return periods


def _line(
    subscription: Subscription,
    period: tuple[datetime, datetime],
    *,
    line_type: str,
    seconds: int,
) -> FeeLine:
    start, end = period
    period_seconds = _seconds(start, end)
    sign = -1 if line_type == "proration_credit" else 1
    fee = subscription.monthly_fee_minor
    return FeeLine(
        customer_id=subscription.customer_id,
        subscription_id=subscription.subscription_id,
        billing_period_start_at=start,
        billing_period_end_at=end,
        line_type=line_type,
        quantity_seconds=seconds,
        period_seconds=period_seconds,
        unit_amount_minor=fee,
        amount_fraction=sign
        * prorated_fraction(fee, seconds=seconds, period_seconds=period_seconds),
    )


def fee_lines(subscription: Subscription) -> list[FeeLine]:
    """Every flat-fee line of a subscription, period by period (none for a free plan)."""
    if subscription.monthly_fee_minor <= 0:
        return []
    lines = []
    fee_starts, ended = subscription.fee_starts_at, subscription.ended_at
    for start, end in fee_periods(subscription):
        period = (start, end)
        if fee_starts <= start:
            lines.append(
                _line(subscription, period, line_type="flat_fee", seconds=_seconds(start, end))
            )
        elif fee_starts < end:
            lines.append(
                _line(
                    subscription,
                    period,
                    line_type="proration_charge",
                    seconds=_seconds(fee_starts, end),
                )
            )
        if subscription.prorated_end and ended is not None and start < ended < end:
            lines.append(
                _line(
                    subscription, period, line_type="proration_credit", seconds=_seconds(ended, end)
                )
            )
    return lines


def plan_change_net(
    *, old_fee_minor: int, new_fee_minor: int, changed_at: datetime
) -> tuple[Fraction, Fraction]:
    """The credit for the unused time on the old fee and the charge for the remaining time on
    the new one, for a change at ``changed_at`` (exact)."""
    start, end = billing_period_at(changed_at)
    period_seconds, remaining = _seconds(start, end), _seconds(changed_at, end)
    credit = -prorated_fraction(old_fee_minor, seconds=remaining, period_seconds=period_seconds)
    charge = prorated_fraction(new_fee_minor, seconds=remaining, period_seconds=period_seconds)
    return credit, charge


@dataclass(frozen=True)
class ExportedSubscription:
    """A row of the Stripe subscriptions export, as ``stg_stripe__subscriptions`` stages it."""

    customer_id: str
    subscription_id: str
    status: str
    plan_id: str
    started_at: datetime
    ended_at: datetime | None
    current_period_start_at: datetime | None
    current_period_end_at: datetime | None
    billing_cycle_anchor_at: datetime | None = None


def subscriptions_from_export(
    rows: Sequence[ExportedSubscription],
    fees: dict[str, int],
    *,
    prorate_cancellations: bool = False,
) -> list[Subscription]:
    """The fee history the exports allow: a trial while ``trialing`` (to the current period's
    end), a plan change where a customer's subscription ends at the second another starts,
    periods by the customer's billing-cycle anchor day (their subscriptions share it)."""
    anchor_days: dict[str, int] = {}
    for row in rows:
        if row.billing_cycle_anchor_at is not None:
            day = anchor_day_of(row.billing_cycle_anchor_at)
            anchor_days[row.customer_id] = min(day, anchor_days.get(row.customer_id, day))
    subscriptions = []
    for row in rows:
        successors = sorted(
            other.subscription_id
            for other in rows
            if other.customer_id == row.customer_id
            and row.ended_at is not None
            and other.started_at == row.ended_at
            and other.subscription_id != row.subscription_id
        )
        trial_ends_at = (
            row.current_period_end_at
            if row.status == "trialing"
            and row.current_period_end_at is not None
            and row.current_period_end_at > row.started_at
            else None
        )
        successor = successors[0] if successors else None
        subscription = Subscription(
            customer_id=row.customer_id,
            subscription_id=row.subscription_id,
            plan_id=row.plan_id,
            monthly_fee_minor=fees[row.plan_id],
            started_at=row.started_at,
            billed_through=row.current_period_start_at,
            ended_at=row.ended_at,
            trial_ends_at=trial_ends_at,
            prorated_end=row.ended_at is not None
            and (successor is not None or prorate_cancellations),
            successor_subscription_id=successor,
            anchor_day=anchor_days.get(row.customer_id, CALENDAR_MONTH_ANCHOR_DAY),
        )
        subscriptions.append(subscription)
    return subscriptions


__all__ = [
    "LINE_TYPES",
    "ExportedSubscription",
    "FeeLine",
    "Subscription",
    "exact_minor",
    "fee_lines",
    "fee_periods",
    "plan_change_net",
    "prorated_fraction",
    "round_to_minor_units",
    "subscriptions_from_export",
]

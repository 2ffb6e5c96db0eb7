"""Billing periods that follow a billing-cycle anchor, as Stripe's do.

A period begins on the anchor's day of the month, at 00:00 UTC, or on the month's last day when
the month is shorter: an anchor on the 31st bills on 30 April and 28 February, and on 31 March
again (Stripe: "a subscription with a billing cycle anchor on the 31st bills on the last day of
shorter months"). An anchor on the 1st gives calendar months, the default for a customer whose
subscriptions carry no anchor. Meterbook rates usage by day, so a period begins at the start of
its day; Stripe begins it at the anchor's time of day (docs/pricing.md, *Billing periods*).

This is the reference of ``dbt_project/macros/billing_periods.sql``; a test renders those macros
and checks them against these functions.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime

CALENDAR_MONTH_ANCHOR_DAY = 1


def anchor_day_of(anchor: datetime | None) -> int:
    """The day of the month (UTC) of a billing-cycle anchor; no anchor: calendar months."""
    return anchor.astimezone(UTC).day if anchor is not None else CALENDAR_MONTH_ANCHOR_DAY


def anchored_day(year: int, month: int, anchor_day: int) -> date:
    """The anchor's day in a month: the anchor day, or the month's last day if it is shorter."""
    if not 1 <= anchor_day <= 31:
        raise ValueError(f"a billing anchor day is 1-31, not {anchor_day}")
    return date(year, month, min(anchor_day, calendar.monthrange(year, month)[1]))


def _shift(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + month - 1 + months
    return index // 12, index % 12 + 1


def period_start_after(period_start: date, anchor_day: int, months: int = 1) -> date:
    """The first day of the period ``months`` periods after the one beginning on
    ``period_start`` (1: that period's end, exclusive)."""
    year, month = _shift(period_start.year, period_start.month, months)
    return anchored_day(year, month, anchor_day)


def billing_period_of(day: date, anchor_day: int = CALENDAR_MONTH_ANCHOR_DAY) -> tuple[date, date]:
    """The billing period containing ``day``: first day inclusive, last exclusive."""
    this_month = anchored_day(day.year, day.month, anchor_day)
    start = this_month if day >= this_month else period_start_after(this_month, anchor_day, -1)
    return start, period_start_after(start, anchor_day)


def billing_period_at(
    at: datetime, anchor_day: int = CALENDAR_MONTH_ANCHOR_DAY
) -> tuple[datetime, datetime]:
    """The billing period containing the instant ``at``, as UTC instants (end exclusive)."""
    start, end = billing_period_of(at.astimezone(UTC).date(), anchor_day)
    return (
        datetime(start.year, start.month, start.day, tzinfo=UTC),
        datetime(end.year, end.month, end.day, tzinfo=UTC),
    )

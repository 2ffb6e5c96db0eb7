"""What the period-to-date rating asks of the ledger side: a late event re-rates the later days
of its period, and a volume charge's negative day is posted as it is."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import duckdb

from ledger.store import CauseTotal
from ledger.usage_accruals import RatedSlot, plan_usage_accruals, unbilled_receivable_account
from orchestration.assets.billing import rerated_usage_dates


def test_a_touched_day_re_rates_every_later_rated_day_of_its_period_only() -> None:
    conn = duckdb.connect()
    conn.execute(
        "create table billable_usage_daily (usage_date date, billing_period_start_date date)"
    )
    days = [date(2026, 9, 29), date(2026, 10, 1), date(2026, 10, 2), date(2026, 10, 5)]
    days.append(date(2026, 11, 1))
    conn.executemany(
        "insert into billable_usage_daily values (?, ?)", [(d, d.replace(day=1)) for d in days]
    )
    assert rerated_usage_dates(conn, {date(2026, 10, 2)}) == {date(2026, 10, 2), date(2026, 10, 5)}
    assert rerated_usage_dates(conn, {date(2026, 9, 29), date(2026, 10, 5)}) == {
        date(2026, 9, 29),
        date(2026, 10, 5),
    }
    assert rerated_usage_dates(conn, set()) == set()


def test_a_negative_day_is_posted_as_a_credit_to_the_unbilled_receivable() -> None:
    """The volume example of docs/pricing.md: 300 on 1 October, -30 on 2 October."""
    day_1, day_2 = date(2026, 10, 1), date(2026, 10, 2)
    first = plan_usage_accruals(
        [RatedSlot("cus_a", "requests", day_1, "usd", Decimal(300))],
        posted={},
        usage_dates={day_1},
    )
    second = plan_usage_accruals(
        [
            RatedSlot("cus_a", "requests", day_1, "usd", Decimal(300)),
            RatedSlot("cus_a", "requests", day_2, "usd", Decimal(-30)),
        ],
        posted={
            "cus_a:requests:2026-10-01": CauseTotal(
                revisions=1,
                amount_by_account={unbilled_receivable_account("cus_a"): Decimal(300)},
                currency="usd",
            )
        },
        usage_dates={day_1, day_2},
    )
    assert len(first) == 1
    (negative,) = second
    receivable = {e.account: e.amount_minor for e in negative.entries}
    assert receivable == {
        unbilled_receivable_account("cus_a"): Decimal(-30),
        "platform:usage_revenue": Decimal(30),
    }

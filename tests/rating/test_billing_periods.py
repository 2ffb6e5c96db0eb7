"""Billing periods follow the billing-cycle anchor: the Python reference (pricing/periods.py)
against Stripe's documented month-end rule, its own tiling properties, and the dbt macros that
the models use (rendered here and run in DuckDB over every anchor and three years of days)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import jinja2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pricing.periods import anchor_day_of, billing_period_at, billing_period_of, period_start_after

MACROS = Path(__file__).resolve().parents[2] / "dbt_project" / "macros" / "billing_periods.sql"


def test_an_anchor_on_the_31st_bills_on_the_last_day_of_shorter_months() -> None:
    starts = [date(2027, 1, 31)]
    for _ in range(4):
        starts.append(period_start_after(starts[-1], 31))
    assert starts == [
        date(2027, 1, 31),
        date(2027, 2, 28),
        date(2027, 3, 31),
        date(2027, 4, 30),
        date(2027, 5, 31),
    ]
    assert billing_period_of(date(2028, 2, 29), 30) == (date(2028, 2, 29), date(2028, 3, 30))
    assert billing_period_of(date(2027, 3, 15), 31) == (date(2027, 2, 28), date(2027, 3, 31))


def test_without_an_anchor_periods_are_calendar_months() -> None:
    assert anchor_day_of(None) == 1
    assert billing_period_of(date(2026, 12, 31)) == (date(2026, 12, 1), date(2027, 1, 1))
    assert billing_period_at(datetime(2026, 11, 16, 12, tzinfo=UTC), 15) == (
        datetime(2026, 11, 15, tzinfo=UTC),
        datetime(2026, 12, 15, tzinfo=UTC),
    )
    assert anchor_day_of(datetime(2026, 10, 15, 23, 30, tzinfo=UTC)) == 15


@given(
    day=st.dates(min_value=date(1970, 1, 1), max_value=date(2999, 12, 1)),
    anchor_day=st.integers(1, 31),
)
def test_periods_tile_the_calendar_and_start_on_the_anchor_day(day: date, anchor_day: int) -> None:
    start, end = billing_period_of(day, anchor_day)
    assert start <= day < end
    assert 28 <= (end - start).days <= 31
    for first in (start, end):
        month_days = (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
        assert first.day == min(anchor_day, month_days.day)
    assert billing_period_of(end, anchor_day)[0] == end
    assert billing_period_of(start - timedelta(days=1), anchor_day)[1] == start


def test_anchor_day_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="1-31"):
        billing_period_of(date(2026, 1, 1), 0)


def test_the_dbt_macros_agree_with_the_reference_on_every_anchor_and_day() -> None:
    macros = jinja2.Environment().from_string(MACROS.read_text()).module
    start_sql = macros.billing_period_start("days.d", "anchors.a")  # type: ignore[attr-defined]
    end_sql = macros.billing_period_after(start_sql, "anchors.a")  # type: ignore[attr-defined]
    back_sql = macros.billing_period_after(start_sql, "anchors.a", "-2")  # type: ignore[attr-defined]
    rows = duckdb.sql(
        f"""
        select days.d, anchors.a, {start_sql} as s, {end_sql} as e, {back_sql} as b
        from (select cast(range as date) as d
              from range(date '2027-01-01', date '2029-01-01', interval 1 day)) as days
        cross join (select range as a from range(1, 32)) as anchors
        """
    ).fetchall()
    assert len(rows) == 731 * 31
    for day, anchor_day, start, end, two_before in rows:
        assert (start, end) == billing_period_of(day, anchor_day), (day, anchor_day)
        assert two_before == period_start_after(start, anchor_day, -2), (day, anchor_day)

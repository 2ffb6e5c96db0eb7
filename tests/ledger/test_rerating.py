"""Re-rating: a late event changes a day's usage; re-running the day posts only the difference,
and every balance then equals a clean run over the corrected data."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import Ledger
from ledger.usage_accruals import (
    USAGE_ACCRUAL_KIND,
    RatedSlot,
    accrual_effective_at,
    plan_usage_accruals,
)

DAYS = (date(2026, 10, 1), date(2026, 10, 2))
slot_keys = st.tuples(
    st.sampled_from(["acme", "beta"]), st.sampled_from(["m1", "m2"]), st.sampled_from(DAYS)
)
amounts = st.decimals(min_value=0, max_value=10**6, places=12)
ratings = st.dictionaries(slot_keys, amounts, max_size=8)


def rated(rating: dict[tuple[str, str, date], Decimal]) -> list[RatedSlot]:
    return [RatedSlot(c, m, d, "usd", amount) for (c, m, d), amount in sorted(rating.items())]


def run_days(book: Ledger, rating: dict[tuple[str, str, date], Decimal], days: set[date]) -> int:
    """What the pipeline's ledger step does for the usage dates a run touched."""
    posted = book.cause_totals(
        USAGE_ACCRUAL_KIND, effective_at=[accrual_effective_at(day) for day in days]
    )
    transactions = plan_usage_accruals(rated(rating), posted=posted, usage_dates=days)
    return book.post_many(transactions).created


def customer_balances(book: Ledger) -> dict[tuple[str, str], Decimal]:
    return {key: amount for key, amount in book.balances().items() if amount != 0}


@pytest.fixture
def ledgers(new_database: Callable[[], str]) -> Iterator[Callable[[], tuple[Ledger, Ledger]]]:
    opened: list[Ledger] = []

    def open_pair() -> tuple[Ledger, Ledger]:
        pair = Ledger.connect(new_database()), Ledger.connect(new_database())
        opened.extend(pair)
        return pair

    yield open_pair
    for book in opened:
        book.close()


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(before=ratings, after=ratings, data=st.data())
def test_rerating_a_day_equals_a_clean_run(
    ledgers: Callable[[], tuple[Ledger, Ledger]],
    before: dict[tuple[str, str, date], Decimal],
    after: dict[tuple[str, str, date], Decimal],
    data: st.DataObject,
) -> None:
    rerated_day = data.draw(st.sampled_from(DAYS))
    # The corrected data differs from the first only on the re-rated day.
    corrected = {k: v for k, v in before.items() if k[2] != rerated_day}
    corrected |= {k: v for k, v in after.items() if k[2] == rerated_day}
    rerun, clean = ledgers()

    run_days(rerun, before, set(DAYS))
    run_days(rerun, corrected, {rerated_day})
    assert run_days(rerun, corrected, {rerated_day}) == 0  # a second re-run posts nothing
    run_days(clean, corrected, set(DAYS))

    assert customer_balances(rerun) == customer_balances(clean)
    assert rerun.verify().ok


def test_a_late_event_posts_one_revision_of_the_difference(
    ledgers: Callable[[], tuple[Ledger, Ledger]],
) -> None:
    book, _ = ledgers()
    day = DAYS[0]
    run_days(book, {("acme", "m1", day): Decimal("10.5")}, {day})
    run_days(book, {("acme", "m1", day): Decimal("12.25")}, {day})  # the late event: +1.75
    totals = book.cause_totals(USAGE_ACCRUAL_KIND)
    assert totals["acme:m1:2026-10-01"].revisions == 2
    assert book.balance("customer:acme:unbilled_receivable", "usd") == Decimal("12.25")
    assert book.balance("platform:usage_revenue", "usd") == Decimal("-12.25")

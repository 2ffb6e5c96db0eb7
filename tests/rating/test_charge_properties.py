"""Properties of the charge models (pricing.charges) on random price books and usage."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestration.settings import DBT_PROJECT_DIR
from pricing.charges import (
    Charge,
    Tier,
    UsageDay,
    daily_amounts,
    minimum_top_up,
    period_amount,
)
from pricing.price_book import load_price_book, price_book_from_rows
from tests.rating.cases import CHARGE_COLUMNS

prices = st.decimals(min_value=0, max_value=1000, places=12, allow_nan=False)
units = st.integers(min_value=0, max_value=10**9)


@st.composite
def tier_lists(draw: st.DrawFn) -> tuple[Tier, ...]:
    bounds = sorted(draw(st.sets(st.integers(min_value=1, max_value=10**7), max_size=4)))
    return tuple(
        Tier(up_to_units=bound, unit_price_minor=draw(prices), flat_fee_minor=draw(prices))
        for bound in [*bounds, None]
    )


@st.composite
def charges(draw: st.DrawFn, models: tuple[str, ...] | None = None) -> Charge:
    model = draw(
        st.sampled_from(models or ("per_unit", "graduated", "volume", "package", "percentage"))
    )
    included = 0 if model == "percentage" else draw(st.integers(min_value=0, max_value=10**6))
    if model == "per_unit":
        return Charge(model, included_units=included, unit_price_minor=draw(prices))
    if model == "package":
        return Charge(
            model,
            included_units=included,
            package_size_units=draw(st.integers(min_value=1, max_value=10**6)),
            package_price_minor=draw(prices),
        )
    if model == "percentage":
        return Charge(model, percentage_rate=draw(prices), fixed_fee_minor=draw(prices))
    return Charge(model, included_units=included, tiers=draw(tier_lists()))


usage_days = st.lists(
    st.tuples(st.integers(min_value=0, max_value=10**7), st.integers(min_value=0, max_value=100)),
    min_size=1,
    max_size=31,
)


@settings(max_examples=300, deadline=None)
@given(charge=charges(), days=usage_days)
def test_the_days_add_up_to_the_period_amount(charge: Charge, days: list[tuple[int, int]]) -> None:
    amounts = daily_amounts([UsageDay(used, charge, events) for used, events in days])
    total_used = sum(used for used, _ in days)
    total_events = sum(events for _, events in days)
    period = period_amount(charge, used_units=total_used, event_count=total_events)
    assert sum(amounts, Decimal(0)) == period
    assert period >= 0


@settings(max_examples=300, deadline=None)
@given(
    charge=charges(),
    days=usage_days,
    late=st.tuples(
        st.integers(min_value=0, max_value=30), st.integers(min_value=1, max_value=10**6)
    ),
)
def test_a_late_event_moves_the_period_by_what_it_is_worth(
    charge: Charge, days: list[tuple[int, int]], late: tuple[int, int]
) -> None:
    """Late usage re-rates its day and the later ones; the period ends where the charge of the
    period's new total puts it, whichever day the late usage landed on."""
    position, late_units = late
    position %= len(days)
    before = daily_amounts([UsageDay(used, charge, events) for used, events in days])
    grown = list(days)
    grown[position] = (grown[position][0] + late_units, grown[position][1] + 1)
    after = daily_amounts([UsageDay(used, charge, events) for used, events in grown])
    assert after[:position] == before[:position]  # earlier days keep their amounts
    used = sum(u for u, _ in grown)
    events = sum(e for _, e in grown)
    assert sum(after, Decimal(0)) == period_amount(charge, used_units=used, event_count=events)


@settings(max_examples=300, deadline=None)
@given(
    charge=charges(models=("per_unit", "graduated", "package", "percentage")),
    first=units,
    more=units,
)
def test_amounts_never_decrease_with_usage_except_under_volume_tiers(
    charge: Charge, first: int, more: int
) -> None:
    assert period_amount(charge, used_units=first + more) >= period_amount(charge, used_units=first)


@settings(max_examples=300, deadline=None)
@given(charge=charges(models=("graduated",)), first=units, more=units)
def test_graduated_amounts_are_non_decreasing_and_daily_amounts_non_negative(
    charge: Charge, first: int, more: int
) -> None:
    assert period_amount(charge, used_units=first + more) >= period_amount(charge, used_units=first)
    assert all(a >= 0 for a in daily_amounts([UsageDay(first, charge), UsageDay(more, charge)]))


@settings(max_examples=200, deadline=None)
@given(charge=charges(models=("per_unit", "graduated", "volume", "package")), used=units)
def test_usage_within_the_allowance_costs_nothing(charge: Charge, used: int) -> None:
    assert period_amount(charge, used_units=min(used, charge.included_units)) == 0


@settings(max_examples=200, deadline=None)
@given(tiers=tier_lists(), used=st.integers(min_value=1, max_value=10**8))
def test_a_single_tier_price_makes_graduated_and_volume_agree_with_per_unit(
    tiers: tuple[Tier, ...], used: int
) -> None:
    flat = tuple(Tier(t.up_to_units, tiers[0].unit_price_minor) for t in tiers)
    graduated = Charge("graduated", tiers=flat)
    volume = Charge("volume", tiers=flat)
    per_unit = Charge("per_unit", unit_price_minor=tiers[0].unit_price_minor)
    expected = period_amount(per_unit, used_units=used)
    assert period_amount(graduated, used_units=used) == expected
    assert period_amount(volume, used_units=used) == expected


@given(minimum=prices, usage=prices)
def test_the_minimum_top_up_brings_usage_to_the_minimum_and_no_further(
    minimum: Decimal, usage: Decimal
) -> None:
    top_up = minimum_top_up(minimum_spend_minor=minimum, usage_amount_minor=usage)
    assert top_up >= 0
    assert usage + top_up == max(minimum, usage)


def test_the_shipped_price_book_is_valid_and_uses_the_charge_models() -> None:
    book = load_price_book(DBT_PROJECT_DIR / "seeds")
    assert len(book.charges) == 60  # 4 plans x 15 meters
    models = {d.charge.charge_model for dated in book.charges.values() for d in dated}
    assert models == {"per_unit", "graduated", "volume", "package", "percentage"}


def _row(**values: str) -> dict[str, str]:
    return {
        **dict.fromkeys(CHARGE_COLUMNS, ""),
        "plan_id": "p",
        "meter_id": "m",
        "effective_from": "2025-01-01",
        "currency": "usd",
        "included_units": "0",
        **values,
    }


@pytest.mark.parametrize(
    ("row", "tiers", "message"),
    [
        (_row(charge_model="flat"), [], "charge_model must be one of"),
        (_row(charge_model="per_unit"), [], "unit_price_minor is required"),
        (
            _row(charge_model="per_unit", unit_price_minor="1", package_size_units="5"),
            [],
            "package_size_units belongs to another charge model",
        ),
        (
            _row(charge_model="package", package_size_units="0", package_price_minor="1"),
            [],
            "package_size_units must be at least 1",
        ),
        (
            _row(
                charge_model="percentage",
                percentage_rate="0.1",
                fixed_fee_minor="1",
                included_units="5",
            ),
            [],
            "no included allowance",
        ),
        (_row(charge_model="graduated"), [], "at least one tier"),
        (
            _row(charge_model="volume"),
            [
                {
                    "plan_id": "p",
                    "meter_id": "m",
                    "effective_from": "2025-01-01",
                    "up_to_units": "10",
                    "unit_price_minor": "1",
                    "flat_fee_minor": "0",
                }
            ],
            "only the last tier is unbounded",
        ),
        (_row(charge_model="per_unit", unit_price_minor="-1"), [], "must not be negative"),
    ],
)
def test_a_malformed_charge_is_refused(row: dict, tiers: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        price_book_from_rows([row], tiers)

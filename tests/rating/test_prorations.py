"""Properties of the flat-fee prorations (pricing.prorations): what a plan change at any second
costs, exactly, and Stripe's documented example."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from pricing.periods import billing_period_at
from pricing.prorations import (
    ExportedSubscription,
    exact_minor,
    fee_lines,
    plan_change_net,
    prorated_fraction,
    round_to_minor_units,
    subscriptions_from_export,
)

fees = st.integers(min_value=0, max_value=10**9)
instants = st.integers(
    min_value=int(datetime(2024, 1, 1, tzinfo=UTC).timestamp()),
    max_value=int(datetime(2030, 12, 31, tzinfo=UTC).timestamp()),
).map(lambda seconds: datetime.fromtimestamp(seconds, tz=UTC))


def change_lines(*, old_fee: int, new_fee: int, changed_at: datetime, since: datetime) -> list:
    """The fee lines of a customer whose subscription on ``old_fee`` (since ``since``) changes to
    one on ``new_fee`` at ``changed_at``, exported in the period of the change."""
    period_start, period_end = billing_period_at(changed_at)
    rows = [
        ExportedSubscription(
            "cus_a", "sub_old", "canceled", "old", since, changed_at, period_start, period_end
        ),
        ExportedSubscription(
            "cus_a", "sub_new", "active", "new", changed_at, None, period_start, period_end
        ),
    ]
    subscriptions = subscriptions_from_export(rows, {"old": old_fee, "new": new_fee})
    return [line for subscription in subscriptions for line in fee_lines(subscription)]


def test_stripes_example_ten_to_twenty_dollars_at_mid_period_is_five_dollars_more() -> None:
    changed_at = datetime(2026, 11, 16, tzinfo=UTC)  # November has 30 days: its middle
    lines = change_lines(
        old_fee=1000, new_fee=2000, changed_at=changed_at, since=datetime(2026, 9, 1, tzinfo=UTC)
    )
    in_november = {
        (line.subscription_id, line.line_type): line
        for line in lines
        if line.billing_period_start_at == datetime(2026, 11, 1, tzinfo=UTC)
    }
    credit = in_november[("sub_old", "proration_credit")]
    charge = in_november[("sub_new", "proration_charge")]
    assert (credit.quantity_seconds, credit.period_seconds) == (1_296_000, 2_592_000)
    assert (credit.amount_minor, charge.amount_minor) == (-500, 1000)
    assert credit.amount_minor + charge.amount_minor == 500  # +$5.00
    assert in_november[("sub_old", "flat_fee")].amount_minor == 1000  # paid in advance, kept


@settings(max_examples=300, deadline=None)
@given(old_fee=fees, new_fee=fees, changed_at=instants)
def test_a_change_costs_the_new_plans_rest_of_period_minus_the_old_plans_unused_part(
    old_fee: int, new_fee: int, changed_at: datetime
) -> None:
    start, end = billing_period_at(changed_at)
    period_seconds = int((end - start).total_seconds())
    remaining = int((end - changed_at).total_seconds())
    lines = change_lines(
        old_fee=old_fee, new_fee=new_fee, changed_at=changed_at, since=start - timedelta(days=40)
    )
    in_period = [line for line in lines if line.billing_period_start_at == start]
    prorations = sum(
        (line.amount_fraction for line in in_period if line.line_type != "flat_fee"), Fraction(0)
    )
    if changed_at == start:
        # A change at the period's start: no proration, the new plan's full fee.
        assert prorations == 0
        assert [(line.subscription_id, line.amount_fraction) for line in in_period] == (
            [("sub_new", Fraction(new_fee))] if new_fee else []
        )
        return
    assert prorations == Fraction(new_fee * remaining, period_seconds) - Fraction(
        old_fee * remaining, period_seconds
    )
    assert (
        sum(plan_change_net(old_fee_minor=old_fee, new_fee_minor=new_fee, changed_at=changed_at))
        == prorations
    )
    # The period's fees: the old plan's advance fee, less its unused part, plus the new plan's
    # remaining part = each plan for the time it ran.
    total = sum((line.amount_fraction for line in in_period), Fraction(0))
    used = period_seconds - remaining
    assert total == Fraction(old_fee * used + new_fee * remaining, period_seconds)


@settings(max_examples=300, deadline=None)
@given(fee=fees, changed_at=instants)
def test_amounts_are_exact_decimals_and_round_like_the_true_fraction(
    fee: int, changed_at: datetime
) -> None:
    start, end = billing_period_at(changed_at)
    period_seconds = int((end - start).total_seconds())
    remaining = int((end - changed_at).total_seconds())
    for sign in (1, -1):
        fraction = sign * prorated_fraction(fee, seconds=remaining, period_seconds=period_seconds)
        exact = exact_minor(fraction)
        assert isinstance(exact, Decimal)
        assert exact.as_tuple().exponent == -12
        assert abs(Fraction(exact)) <= abs(fraction) < abs(Fraction(exact)) + Fraction(1, 10**12)
        assert round_to_minor_units(exact) == round_to_minor_units(fraction)
        assert abs(round_to_minor_units(exact) - fraction) <= Fraction(1, 2)


def test_rounding_is_half_away_from_zero() -> None:
    assert [round_to_minor_units(Decimal(x)) for x in ("0.5", "-0.5", "1.4999", "-2.5")] == [
        1,
        -1,
        1,
        -3,
    ]
    assert [round_to_minor_units(Fraction(x)) for x in ("1/2", "-1/2", "3/2", "-7/3")] == [
        1,
        -1,
        2,
        -2,
    ]


@settings(max_examples=200, deadline=None)
@given(fee=fees, started_at=instants, trial_days=st.integers(min_value=1, max_value=60))
def test_no_fee_during_a_trial_and_the_rest_of_its_last_period_prorated(
    fee: int, started_at: datetime, trial_days: int
) -> None:
    trial_ends_at = started_at + timedelta(days=trial_days)
    row = ExportedSubscription(
        "cus_a", "sub_a", "trialing", "p", started_at, None, started_at, trial_ends_at
    )
    (subscription,) = subscriptions_from_export([row], {"p": fee})
    lines = fee_lines(subscription)
    # Billed through the period the export is in (the trial's start): only that period.
    if fee == 0 or billing_period_at(trial_ends_at)[0] > billing_period_at(started_at)[0]:
        assert lines == []
        return
    (line,) = lines
    end = billing_period_at(started_at)[1]
    assert line.line_type == "proration_charge"
    assert line.quantity_seconds == int((end - trial_ends_at).total_seconds())


@settings(max_examples=200, deadline=None)
@given(fee=fees, started_at=instants, ended_at=instants, prorate=st.booleans())
def test_a_cancellation_refunds_nothing_unless_prorated(
    fee: int, started_at: datetime, ended_at: datetime, prorate: bool
) -> None:
    row = ExportedSubscription("cus_a", "sub_a", "canceled", "p", started_at, ended_at, None, None)
    (subscription,) = subscriptions_from_export([row], {"p": fee}, prorate_cancellations=prorate)
    lines = fee_lines(subscription)
    credits = [line for line in lines if line.line_type == "proration_credit"]
    if ended_at <= started_at or fee == 0 or ended_at == billing_period_at(ended_at)[0]:
        assert credits == []
    else:
        assert len(credits) == (1 if prorate else 0)
    # Never more than the periods it ran in, each at most one full fee.
    total = sum((line.amount_fraction for line in lines), Fraction(0))
    assert 0 <= total <= fee * len({line.billing_period_start_at for line in lines})

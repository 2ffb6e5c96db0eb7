"""The local Stripe bills a subscription's periods from its billing-cycle anchor, as Stripe
does: the anchor's day of each month at its time of day, the last day of a shorter month, and a
first short period up to an anchor in the future."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stripe_local.catalog import subscription_period


def _at(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp())


ANCHOR = _at(2027, 1, 31, 10, 0)


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (_at(2027, 2, 15), (_at(2027, 1, 31, 10), _at(2027, 2, 28, 10))),
        (_at(2027, 2, 28, 9, 59), (_at(2027, 1, 31, 10), _at(2027, 2, 28, 10))),
        (_at(2027, 2, 28, 10), (_at(2027, 2, 28, 10), _at(2027, 3, 31, 10))),
        (_at(2027, 4, 30, 12), (_at(2027, 4, 30, 10), _at(2027, 5, 31, 10))),
        (_at(2027, 12, 31, 10), (_at(2027, 12, 31, 10), _at(2028, 1, 31, 10))),
        (_at(2028, 1, 5), (_at(2027, 12, 31, 10), _at(2028, 1, 31, 10))),
        (ANCHOR, (ANCHOR, _at(2027, 2, 28, 10))),
    ],
)
def test_periods_follow_the_anchor_and_stripes_month_end_rule(
    at: int, expected: tuple[int, int]
) -> None:
    assert subscription_period(at, ANCHOR) == expected


def test_a_future_anchor_starts_with_a_short_period_up_to_it() -> None:
    assert subscription_period(_at(2027, 1, 20), ANCHOR) == (_at(2027, 1, 20), ANCHOR)

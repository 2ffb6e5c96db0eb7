"""Charge models: what a quantity used over a billing period costs, and its daily amounts.

This is the reference implementation of the rating in ``dbt_project/models/marts/
billable_usage_daily.sql``; ``docs/pricing.md`` states the rules and works an example of each.
Amounts are exact ``Decimal`` minor units, never rounded here.

A charge is priced on the *billable* period-to-date quantity: what was used since the period
started, less the plan's included allowance. A day's amount is the charge's amount through that
day minus its amount through the day before (both at the charge in force on the day), so the
days of a period add up to the period's amount exactly, and a late event re-rates every later
day of its period.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import pairwise
from typing import TypeVar

CHARGE_MODELS = ("per_unit", "graduated", "volume", "package", "percentage")
TIERED_MODELS = ("graduated", "volume")

_T = TypeVar("_T")


@dataclass(frozen=True)
class Tier:
    """Units up to and including ``up_to_units`` (``None``: no limit) cost ``unit_price_minor``
    each; ``flat_fee_minor`` is charged once the usage enters the tier."""

    up_to_units: int | None
    unit_price_minor: Decimal
    flat_fee_minor: Decimal = Decimal(0)


@dataclass(frozen=True)
class Charge:
    """One row of ``price_book_charges`` with its tiers (see docs/pricing.md)."""

    charge_model: str
    included_units: int = 0
    unit_price_minor: Decimal | None = None
    package_size_units: int | None = None
    package_price_minor: Decimal | None = None
    percentage_rate: Decimal | None = None
    fixed_fee_minor: Decimal | None = None
    tiers: tuple[Tier, ...] = field(default=())

    def __post_init__(self) -> None:
        problems = charge_problems(self)
        if problems:
            raise ValueError(f"Invalid {self.charge_model} charge: {'; '.join(problems)}")


def charge_problems(charge: Charge) -> list[str]:
    """What makes a charge unusable, in words (empty: none)."""
    problems: list[str] = []
    model = charge.charge_model
    if model not in CHARGE_MODELS:
        return [f"charge_model must be one of {', '.join(CHARGE_MODELS)}"]
    if charge.included_units < 0:
        problems.append("included_units must not be negative")
    wanted = {
        "per_unit": {"unit_price_minor"},
        "graduated": set(),
        "volume": set(),
        "package": {"package_size_units", "package_price_minor"},
        "percentage": {"percentage_rate", "fixed_fee_minor"},
    }[model]
    for name in (
        "unit_price_minor",
        "package_size_units",
        "package_price_minor",
        "percentage_rate",
        "fixed_fee_minor",
    ):
        value = getattr(charge, name)
        if name in wanted and value is None:
            problems.append(f"{name} is required")
        elif name not in wanted and value is not None:
            problems.append(f"{name} belongs to another charge model")
        elif value is not None and value < 0:
            problems.append(f"{name} must not be negative")
    if charge.package_size_units is not None and charge.package_size_units < 1:
        problems.append("package_size_units must be at least 1")
    if model == "percentage" and charge.included_units:
        problems.append("a percentage charge has no included allowance")
    if model in TIERED_MODELS:
        problems.extend(_tier_problems(charge.tiers))
    elif charge.tiers:
        problems.append("only graduated and volume charges have tiers")
    return problems


def _tier_problems(tiers: Sequence[Tier]) -> list[str]:
    if not tiers:
        return ["a tiered charge needs at least one tier"]
    problems = []
    bounds = [tier.up_to_units for tier in tiers]
    if bounds[-1] is not None or None in bounds[:-1]:
        problems.append("only the last tier is unbounded, and it must be")
    finite = [bound for bound in bounds if bound is not None]
    if finite and (finite[0] < 1 or any(b <= a for a, b in pairwise(finite))):
        problems.append("tier bounds must be at least 1 and strictly increasing")
    if any(t.unit_price_minor < 0 or t.flat_fee_minor < 0 for t in tiers):
        problems.append("tier prices and flat fees must not be negative")
    return problems


def _lower_bounds(tiers: Sequence[Tier]) -> list[int]:
    """Each tier starts after the previous one's ``up_to_units`` (the first after 0)."""
    return [0] + [tier.up_to_units or 0 for tier in tiers[:-1]]


def _packages(units: int, size: int) -> int:
    """Whole packages needed for ``units``: rounded up, in integers."""
    return -(-units // size)


def billable_units(charge: Charge, used_units: int) -> int:
    """Period-to-date usage less the included allowance, never below zero."""
    return max(used_units - charge.included_units, 0)


def period_amount(charge: Charge, *, used_units: int, event_count: int = 0) -> Decimal:
    """The charge's exact amount for ``used_units`` used so far in the period (``event_count``
    events so far: the fixed fee of a percentage charge is per event)."""
    if used_units < 0 or event_count < 0:
        raise ValueError("usage cannot be negative")
    units = billable_units(charge, used_units)
    model = charge.charge_model
    if model == "per_unit":
        return units * _required(charge.unit_price_minor)
    if model == "package":
        size = _required(charge.package_size_units)
        return _packages(units, size) * _required(charge.package_price_minor)
    if model == "percentage":
        return units * _required(charge.percentage_rate) + event_count * _required(
            charge.fixed_fee_minor
        )
    lowers = _lower_bounds(charge.tiers)
    if model == "graduated":
        total = Decimal(0)
        for lower, tier in zip(lowers, charge.tiers, strict=True):
            if units <= lower:
                break
            upper = units if tier.up_to_units is None else min(units, tier.up_to_units)
            total += (upper - lower) * tier.unit_price_minor + tier.flat_fee_minor
        return total
    # volume: every unit at the price of the tier the whole quantity falls in
    for lower, tier in zip(lowers, charge.tiers, strict=True):
        if units > lower and (tier.up_to_units is None or units <= tier.up_to_units):
            return units * tier.unit_price_minor + tier.flat_fee_minor
    return Decimal(0)


def _required(value: _T | None) -> _T:
    if value is None:  # charge_problems() refuses such a charge; this keeps type checkers calm
        raise ValueError("charge is missing a price")
    return value


@dataclass(frozen=True)
class UsageDay:
    """One day of a period with usage: its quantity, events, and the charge in force that day."""

    used_units: int
    charge: Charge
    event_count: int = 0


def daily_amounts(days: Sequence[UsageDay]) -> list[Decimal]:
    """Each day's amount: the period-to-date amount through the day minus through the day
    before, both at the day's charge. Days are in date order, within one billing period."""
    amounts = []
    used = events = 0
    for day in days:
        before = period_amount(day.charge, used_units=used, event_count=events)
        used += day.used_units
        events += day.event_count
        after = period_amount(day.charge, used_units=used, event_count=events)
        amounts.append(after - before)
    return amounts


def minimum_top_up(*, minimum_spend_minor: Decimal, usage_amount_minor: Decimal) -> Decimal:
    """What tops a period's usage up to the plan's minimum spend (zero when usage reaches it)."""
    return max(minimum_spend_minor - usage_amount_minor, Decimal(0))

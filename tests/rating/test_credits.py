"""Credits consumed by usage (pricing/credits.py): the rules by example, then invariants on
random grants and charges."""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pricing.credits import (
    CreditAllocation,
    CreditGrant,
    UsageCharge,
    apply_credits,
    end_of_day,
    reference_spending_orders,
)
from pricing.prorations import round_to_minor_units

OCTOBER = date(2026, 10, 1)
NOVEMBER = date(2026, 11, 1)


def at(day: int, hour: int = 0, month: int = 10) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def charge(
    day: int, amount: str, *, meter: str = "requests", customer: str = "cus_a", month: int = 10
) -> UsageCharge:
    return UsageCharge(
        customer_id=customer,
        meter_id=meter,
        usage_date=date(2026, month, day),
        billing_period_start_date=date(2026, month, 1),
        currency="usd",
        amount_minor=Decimal(amount),
    )


def grant(grant_id: str, amount: str, **terms: object) -> CreditGrant:
    return CreditGrant(
        grant_id=grant_id,
        customer_id=str(terms.pop("customer", "cus_a")),
        currency="usd",
        amount_minor=Decimal(amount),
        effective_at=terms.pop("effective_at", at(1)),  # type: ignore[arg-type]
        **terms,  # type: ignore[arg-type]
    )


def paid(allocation: CreditAllocation) -> dict[tuple[str, int], Decimal]:
    """Applications by grant and day of month."""
    return {
        (a.grant_id, a.usage_date.day): a.amount_minor
        for a in allocation.applications
        if a.usage_date.month == 10
    }


def test_lower_priority_first_then_earliest_expiry_then_the_next_grant() -> None:
    grants = [
        grant("late_expiry", "100", priority=1, expires_at=at(30)),
        grant("early_expiry", "50", priority=1, expires_at=at(20)),
        grant("second_priority", "1000", priority=2),
    ]
    allocation = apply_credits(grants, [charge(2, "120"), charge(3, "100")], rated_through=None)
    assert paid(allocation) == {
        ("early_expiry", 2): Decimal(50),
        ("late_expiry", 2): Decimal(70),
        ("late_expiry", 3): Decimal(30),
        ("second_priority", 3): Decimal(70),
    }


def test_a_grant_pays_for_the_days_at_whose_end_it_is_in_force() -> None:
    noon_grant = grant("g", "1000", effective_at=at(10, 12), expires_at=at(20, 12))
    days = [charge(day, "1") for day in (9, 10, 19, 20)]
    assert paid(apply_credits([noon_grant], days, rated_through=None)) == {
        ("g", 10): Decimal(1),
        ("g", 19): Decimal(1),
    }
    # Expiring exactly at midnight, it still pays for the day that midnight ends.
    midnight = grant("m", "1000", expires_at=at(20))
    assert paid(apply_credits([midnight], [charge(19, "1")], rated_through=None)) == {
        ("m", 19): Decimal(1)
    }


def test_a_grant_pays_only_for_its_meters_its_customer_and_its_currency() -> None:
    only_output = grant("g", "1000", meters=frozenset({"output_tokens"}))
    charges = [
        charge(2, "5", meter="requests"),
        charge(2, "7", meter="output_tokens"),
        charge(2, "9", meter="output_tokens", customer="cus_b"),
    ]
    euro = UsageCharge("cus_a", "output_tokens", date(2026, 10, 3), OCTOBER, "eur", Decimal(4))
    assert paid(apply_credits([only_output], [*charges, euro], rated_through=None)) == {
        ("g", 2): Decimal(7)
    }


def test_a_lower_charge_lowers_what_is_owed_before_credit_comes_back() -> None:
    # 80 charged, 50 paid by credit; the volume tier then lowers the period by 40 (to 40):
    # 30 comes off what the customer owes, 10 of credit comes back (last applied, first back).
    grants = [grant("first", "30", priority=1), grant("second", "20", priority=2)]
    allocation = apply_credits(
        grants, [charge(2, "80"), charge(3, "-40")], rated_through=date(2026, 10, 3)
    )
    assert paid(allocation) == {
        ("first", 2): Decimal(30),
        ("second", 2): Decimal(20),
        ("second", 3): Decimal(-10),
    }
    # Returned credit pays again, in spending order (a later day, another meter).
    later = apply_credits(
        grants, [charge(2, "80"), charge(3, "-40"), charge(4, "15", meter="m2")], rated_through=None
    )
    assert paid(later)[("second", 4)] == Decimal(10)


def test_an_expired_grant_gets_its_credit_back_and_expires_with_it() -> None:
    grants = [grant("g", "100", expires_at=at(5))]
    charges = [charge(2, "60"), charge(10, "-25")]
    allocation = apply_credits(grants, charges, rated_through=date(2026, 10, 31))
    assert paid(allocation) == {("g", 2): Decimal(60), ("g", 10): Decimal(-25)}
    [expiry] = allocation.expiries
    assert (expiry.grant_id, expiry.remaining_minor) == ("g", Decimal(65))


def test_expiry_is_recorded_once_the_rating_reaches_it() -> None:
    grants = [grant("g", "100", expires_at=at(5, 12)), grant("open", "5")]
    charges = [charge(2, "30")]
    assert apply_credits(grants, charges, rated_through=date(2026, 10, 4)).expiries == ()
    [expiry] = apply_credits(grants, charges, rated_through=date(2026, 10, 5)).expiries
    assert (expiry.grant_id, expiry.remaining_minor, expiry.expires_at) == (
        "g",
        Decimal(70),
        at(5, 12),
    )


def test_balances_carry_into_the_next_period_but_returns_stay_in_their_period() -> None:
    grants = [grant("g", "100")]
    charges = [charge(30, "70"), charge(2, "50", month=11), charge(3, "-50", month=11)]
    allocation = apply_credits(grants, charges, rated_through=None)
    november = {
        (a.usage_date.day, a.amount_minor)
        for a in allocation.applications
        if a.usage_date.month == 11
    }
    # November could use 30 of what was left; the decrease returns November's credit only.
    assert november == {(2, Decimal(30)), (3, Decimal(-30))}


PRICING_DOC = Path(__file__).resolve().parents[2] / "docs" / "pricing.md"


def doc_block(name: str) -> list[dict[str, str]]:
    """The rows of the ```csv <name> block of the doc's *Credits* worked example."""
    text = PRICING_DOC.read_text()
    (block,) = re.findall(rf"```csv {name}\n(.*?)```", text, flags=re.S)
    return list(csv.DictReader(io.StringIO(block)))


def test_the_doc_worked_example_is_reproduced_from_its_own_numbers() -> None:
    grants = [
        CreditGrant(
            grant_id=row["grant_id"],
            customer_id="cus_doc",
            currency="usd",
            amount_minor=Decimal(row["amount_minor"]),
            effective_at=datetime.fromisoformat(row["effective_at"]),
            expires_at=datetime.fromisoformat(row["expires_at"]) if row["expires_at"] else None,
            priority=int(row["priority"]),
            meters=frozenset(filter(None, row["meters"].split(";"))),
        )
        for row in doc_block("credit_grants")
    ]
    charges = [
        UsageCharge(
            "cus_doc",
            row["meter_id"],
            date.fromisoformat(row["usage_date"]),
            OCTOBER,
            "usd",
            Decimal(row["amount_minor"]),
        )
        for row in doc_block("usage_charges")
    ]
    last_day = max(c.usage_date for c in charges)
    allocation = apply_credits(grants, charges, rated_through=last_day)
    assert sorted(
        (a.usage_date.isoformat(), a.meter_id, a.grant_id, a.amount_minor)
        for a in allocation.applications
    ) == sorted(
        (row["usage_date"], row["meter_id"], row["grant_id"], Decimal(row["amount_minor"]))
        for row in doc_block("credit_applications")
    )
    assert [(e.grant_id, e.expires_at, e.remaining_minor) for e in allocation.expiries] == [
        (
            row["grant_id"],
            datetime.fromisoformat(row["expires_at"]),
            Decimal(row["remaining_minor"]),
        )
        for row in doc_block("credit_expiries")
    ]
    # The doc's totals: input charges 14, credit 14; output charges 27, credit 26 (1 owed).
    credited: dict[str, Decimal] = defaultdict(Decimal)
    for a in allocation.applications:
        credited[a.meter_id] += a.amount_minor
    assert dict(credited) == {"input_tokens": Decimal(14), "output_tokens": Decimal(26)}


# --- invariants on random grants and charges --------------------------------------------------

CUSTOMERS = ["cus_a", "cus_b"]
METERS = ["m1", "m2", "m3"]
DAY_COUNT = 45  # October and half of November: two periods

amounts = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal(500), places=6)
signed_amounts = st.decimals(min_value=Decimal(-300), max_value=Decimal(500), places=6)
instants = st.integers(min_value=-3 * 24, max_value=(DAY_COUNT + 3) * 24).map(
    lambda hours: at(1) + timedelta(hours=hours)
)


@st.composite
def grant_lists(draw: st.DrawFn) -> list[CreditGrant]:
    count = draw(st.integers(min_value=0, max_value=6))
    grants = []
    for number in range(count):
        effective_at = draw(instants)
        expires_at = draw(st.none() | instants.filter(lambda t, e=effective_at: t > e))
        grants.append(
            CreditGrant(
                grant_id=f"grant_{number}",
                customer_id=draw(st.sampled_from(CUSTOMERS)),
                currency="usd",
                amount_minor=draw(amounts),
                effective_at=effective_at,
                expires_at=expires_at,
                priority=draw(st.integers(min_value=0, max_value=3)),
                meters=frozenset(draw(st.lists(st.sampled_from(METERS), max_size=2))),
            )
        )
    return grants


@st.composite
def charge_lists(draw: st.DrawFn) -> list[UsageCharge]:
    """Daily amounts whose running sum per meter and period never goes below zero, as a
    period-to-date rating's differences never do."""
    slots = draw(
        st.dictionaries(
            st.tuples(
                st.sampled_from(CUSTOMERS),
                st.sampled_from(METERS),
                st.integers(min_value=0, max_value=DAY_COUNT - 1),
            ),
            signed_amounts,
            max_size=40,
        )
    )
    running: dict[tuple[str, str, date], Decimal] = defaultdict(Decimal)
    charges = []
    for (customer, meter, offset), amount in sorted(slots.items(), key=lambda s: s[0][2]):
        day = OCTOBER + timedelta(days=offset)
        period = day.replace(day=1)
        amount = max(amount, -running[(customer, meter, period)])
        running[(customer, meter, period)] += amount
        charges.append(UsageCharge(customer, meter, day, period, "usd", amount))
    return charges


def _periods(charges: list[UsageCharge]) -> dict[tuple[str, str, date], Decimal]:
    totals: dict[tuple[str, str, date], Decimal] = defaultdict(Decimal)
    for c in charges:
        totals[(c.customer_id, c.meter_id, c.billing_period_start_date)] += c.amount_minor
    return totals


@settings(max_examples=150, deadline=None)
@given(grants=grant_lists(), charges=charge_lists())
def test_credit_never_exceeds_grants_or_charges_and_nothing_goes_negative(
    grants: list[CreditGrant], charges: list[UsageCharge]
) -> None:
    last_day = OCTOBER + timedelta(days=DAY_COUNT - 1)
    allocation = apply_credits(grants, charges, rated_through=last_day)
    by_id = {g.grant_id: g for g in grants}
    charge_at = {(c.customer_id, c.meter_id, c.usage_date): c for c in charges}

    # Day by day, what each grant has paid so far stays within [0, its amount].
    spent: dict[str, Decimal] = defaultdict(Decimal)
    for application in sorted(allocation.applications, key=lambda a: a.usage_date):
        spent[application.grant_id] += application.amount_minor
        assert 0 <= spent[application.grant_id] <= by_id[application.grant_id].amount_minor
        slot = charge_at[(application.customer_id, application.meter_id, application.usage_date)]
        grant_terms = by_id[application.grant_id]
        assert grant_terms.customer_id == slot.customer_id
        if application.amount_minor > 0:
            assert grant_terms.pays_for(slot)
            assert application.amount_minor <= slot.amount_minor

    # Per invoice line (customer, meter, period): 0 <= credit applied <= charges, and, each
    # rounded on its own with the one rule (as invoice_credits does), the amount due is never
    # negative. tests/rating/test_invoice_properties.py checks the dbt side.
    credited: dict[tuple[str, str, date], Decimal] = defaultdict(Decimal)
    for application in allocation.applications:
        key = (application.customer_id, application.meter_id, application.billing_period_start_date)
        credited[key] += application.amount_minor
    for key, charged in _periods(charges).items():
        assert 0 <= credited[key] <= charged
        assert round_to_minor_units(charged) - round_to_minor_units(credited[key]) >= 0

    # A grant's amount = what it paid + what it held at expiry (or holds now).
    expired = {e.grant_id: e.remaining_minor for e in allocation.expiries}
    for g in grants:
        remaining = g.amount_minor - spent[g.grant_id]
        assert remaining >= 0
        if g.expires_at is not None and g.expires_at <= end_of_day(last_day):
            assert expired[g.grant_id] == remaining
        else:
            assert g.grant_id not in expired


@settings(max_examples=100, deadline=None)
@given(grants=grant_lists(), charges=charge_lists(), cut=st.integers(0, DAY_COUNT))
def test_billing_more_days_never_changes_the_days_already_billed(
    grants: list[CreditGrant], charges: list[UsageCharge], cut: int
) -> None:
    boundary = OCTOBER + timedelta(days=cut)
    earlier = [c for c in charges if c.usage_date < boundary]
    before = apply_credits(grants, earlier, rated_through=None).applications
    after = apply_credits(list(reversed(grants)), charges[::-1], rated_through=None)
    assert before == tuple(a for a in after.applications if a.usage_date < boundary)


@settings(max_examples=100, deadline=None)
@given(grants=grant_lists(), charges=charge_lists())
def test_a_grant_that_could_pay_is_never_passed_over(
    grants: list[CreditGrant], charges: list[UsageCharge]
) -> None:
    """Replaying the applications: when a positive charge is not fully paid by credit, no
    grant that may pay for it still holds anything after it."""
    allocation = apply_credits(grants, charges, rated_through=None)
    paid_for: dict[tuple[str, str, date], Decimal] = defaultdict(Decimal)
    for a in allocation.applications:
        paid_for[(a.customer_id, a.meter_id, a.usage_date)] += a.amount_minor
    held = {g.grant_id: g.amount_minor for g in grants}
    applications = sorted(allocation.applications, key=lambda a: (a.usage_date, a.customer_id))
    for c in sorted(charges, key=lambda c: (c.usage_date, c.customer_id, c.meter_id)):
        for a in applications:
            if (a.customer_id, a.meter_id, a.usage_date) == (
                c.customer_id,
                c.meter_id,
                c.usage_date,
            ):
                held[a.grant_id] -= a.amount_minor
        if (
            c.amount_minor > 0
            and paid_for[(c.customer_id, c.meter_id, c.usage_date)] < c.amount_minor
        ):
            assert not [g.grant_id for g in grants if g.pays_for(c) and held[g.grant_id] > 0]


def test_the_draw_down_follows_the_spending_order_it_is_given() -> None:
    """The pipeline passes dbt's order (int_credit_grant_slots); the draw-down follows it, and
    by default follows the reference rule (priority first)."""
    grants = [grant("g_low", "5", priority=1), grant("g_high", "5", priority=9)]
    charges = [charge(2, "3")]
    assert reference_spending_orders(grants, charges) == {
        ("cus_a", "requests", date(2026, 10, 2)): ("g_low", "g_high")
    }
    assert paid(apply_credits(grants, charges, rated_through=None)) == {("g_low", 2): 3}
    reversed_order = {("cus_a", "requests", date(2026, 10, 2)): ("g_high", "g_low")}
    assert paid(
        apply_credits(grants, charges, rated_through=None, spending_orders=reversed_order)
    ) == {("g_high", 2): 3}
    # A slot the order leaves out is paid by no grant.
    assert paid(apply_credits(grants, charges, rated_through=None, spending_orders={})) == {}
    with pytest.raises(ValueError, match="not among the grants"):
        apply_credits(
            grants,
            charges,
            rated_through=None,
            spending_orders={("cus_a", "requests", date(2026, 10, 2)): ("g_gone",)},
        )

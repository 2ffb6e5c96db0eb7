"""A price-book charge and the Stripe price made from it bill the same for every period total:
the price is created through stripe-python on the local Stripe, read back as Stripe returns it,
and priced by the local Stripe's own invoice arithmetic."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from decimal import ROUND_DOWN, Decimal
from typing import Any

import pytest
import stripe
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestration.settings import DBT_PROJECT_DIR
from pricing.charges import Charge, Tier, period_amount
from pricing.price_book import load_price_book
from pricing.stripe_prices import NotExpressibleAtStripe, stripe_price_fields
from stripe_local.billing import line_amount
from stripe_local.server import LocalStripeServer
from tests.rating.test_charge_properties import charges

Created = tuple[LocalStripeServer, stripe.StripeClient, str]


@pytest.fixture(scope="module")
def local_stripe() -> Iterator[Created]:
    with LocalStripeServer(now="2026-11-03T00:00:00Z") as server:
        client = stripe.StripeClient(
            "sk_test_prices", base_addresses={"api": server.url}, max_network_retries=0
        )
        product = client.v1.products.create(params={"name": "Tokens"})
        yield server, client, product.id


def stored_price(created: Created, charge: Charge) -> dict[str, Any]:
    """Create the charge's Stripe price; return it as the local Stripe stores and returns it."""
    server, client, product = created
    params = {
        **stripe_price_fields(charge).create_params(),
        "product": product,
        "currency": "usd",
        "recurring": {"interval": "month", "usage_type": "metered"},
    }
    price = client.v1.prices.create(params=params)  # type: ignore[arg-type]
    request = urllib.request.Request(
        f"{server.url}/v1/prices/{price.id}", headers={"Authorization": "Bearer sk_test_prices"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def expressible(charge: Charge) -> bool:
    try:
        stripe_price_fields(charge)
    except NotExpressibleAtStripe:
        return False
    return True


def boundaries(charge: Charge) -> list[int]:
    """Quantities around every place the amount changes slope: allowance, tiers, packages."""
    points = {0, 1, charge.included_units}
    points |= {
        tier.up_to_units + charge.included_units for tier in charge.tiers if tier.up_to_units
    }
    if charge.package_size_units:
        points |= {charge.included_units + charge.package_size_units * k for k in (1, 2)}
    return sorted({p + d for p in points for d in (-1, 0, 1) if p + d >= 0})


def whole_flat_fees(charge: Charge) -> Charge:
    """Stripe's tier flat amounts are whole minor units: drop the fraction."""
    tiers = tuple(
        Tier(t.up_to_units, t.unit_price_minor, t.flat_fee_minor.to_integral_value(ROUND_DOWN))
        for t in charge.tiers
    )
    return replace(charge, tiers=tiers)


@settings(max_examples=60, deadline=None)
@given(
    charge=charges(models=("per_unit", "graduated", "volume", "package"))
    .map(whole_flat_fees)
    .filter(expressible),
    quantity=st.integers(min_value=0, max_value=10**8),
)
def test_stripe_bills_what_the_charge_rates(
    local_stripe: Created, charge: Charge, quantity: int
) -> None:
    price = stored_price(local_stripe, charge)
    for used in [quantity, *boundaries(charge)]:
        assert line_amount(price, used) == period_amount(charge, used_units=used), used


def test_every_demo_price_book_charge_is_a_stripe_price_that_bills_the_same(
    local_stripe: Created,
) -> None:
    book = load_price_book(DBT_PROJECT_DIR / "seeds")
    models = set()
    for (plan_id, meter_id), dated_charges in book.charges.items():
        for dated in dated_charges:
            if dated.charge.charge_model == "percentage":
                continue  # no Stripe price expresses it (the test below)
            price = stored_price(local_stripe, dated.charge)
            models.add((dated.charge.charge_model, dated.charge.included_units > 0))
            for used in [*boundaries(dated.charge), 123_456_789]:
                assert line_amount(price, used) == period_amount(dated.charge, used_units=used), (
                    plan_id,
                    meter_id,
                    used,
                )
    assert models >= {
        ("per_unit", False),
        ("per_unit", True),
        ("graduated", False),
        ("volume", False),
        ("package", False),
    }


@pytest.mark.parametrize(
    "charge",
    [
        Charge("percentage", percentage_rate=Decimal("2.9"), fixed_fee_minor=Decimal(30)),
        Charge("volume", included_units=10, tiers=(Tier(None, Decimal(1)),)),
        Charge("package", included_units=10, package_size_units=5, package_price_minor=Decimal(1)),
        Charge("volume", tiers=(Tier(10, Decimal(1), Decimal(5)), Tier(None, Decimal(1)))),
        Charge("graduated", tiers=(Tier(None, Decimal(1), Decimal("0.5")),)),
    ],
)
def test_charges_stripe_cannot_express_are_refused_with_the_reason(charge: Charge) -> None:
    with pytest.raises(NotExpressibleAtStripe, match="bill it as an invoice item"):
        stripe_price_fields(charge)

"""The catalogue pulled from a Stripe API (every page) lands in the raw layer as an export."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
import stripe

from ingestion.stripe_exports import load_stripe_exports
from stripe_local.server import LocalStripeServer
from stripe_sync.catalog import pull_catalog

CUSTOMERS = 130  # more than one page of 100


@pytest.fixture
def server() -> Iterator[LocalStripeServer]:
    with LocalStripeServer(now="2026-10-05T00:00:00Z") as running:
        yield running


@pytest.fixture
def client(server: LocalStripeServer) -> stripe.StripeClient:
    return stripe.StripeClient(
        "sk_test_catalog",
        base_addresses={"api": server.url, "meter_events": server.url},
        max_network_retries=0,
    )


def test_the_catalog_is_pulled_page_by_page_into_export_files(
    server: LocalStripeServer, client: stripe.StripeClient, tmp_path: Path
) -> None:
    v1 = client.v1
    customers = [
        v1.customers.create(params={"email": f"c{n}@example.com", "name": f"C{n}"})
        for n in range(CUSTOMERS)
    ]
    product = v1.products.create(params={"name": "Nimbus tokens", "id": "prod_nimbus"})
    per_unit = v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount_decimal": "0.0003",
            "recurring": {"interval": "month", "usage_type": "metered"},
            "lookup_key": "starter:nimbus_large__input_tokens",
        }
    )
    tiered = v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": [
                {"up_to": 1000, "unit_amount_decimal": "0.5"},
                {"up_to": "inf", "unit_amount_decimal": "0.25", "flat_amount": 100},
            ],
            "recurring": {"interval": "month", "usage_type": "metered"},
        }
    )
    subscription = v1.subscriptions.create(
        params={
            "customer": customers[0].id,
            "items": [{"price": per_unit.id}, {"price": tiered.id}],
            "metadata": {"plan_id": "starter"},
        }
    )

    bill = urllib.request.Request(
        f"{server.url}/_local/bill",
        data=json.dumps({"period_start": 1_790_812_800, "period_end": 1_793_491_200}).encode(),
    )
    with urllib.request.urlopen(bill, timeout=30) as response:
        (invoice,) = json.loads(response.read())["invoices"]

    counts = pull_catalog(client, tmp_path / "stripe")
    assert counts == {
        "customers": CUSTOMERS,
        "products": 1,
        "prices": 2,
        "subscriptions": 1,
        "subscription_items": 2,
        "invoices": 1,
        "invoice_line_items": 2,
    }
    with duckdb.connect() as conn:
        loaded = load_stripe_exports(conn, stripe_dir=tmp_path / "stripe")
        assert loaded == counts
        assert conn.execute("select count(distinct id) from stripe_raw.customers").fetchone() == (
            CUSTOMERS,
        )
        assert conn.execute(
            "select metadata from stripe_raw.subscriptions where id = ?", [subscription.id]
        ).fetchone() == (json.dumps({"plan_id": "starter"}),)
        # Stripe's billing_cycle_anchor (by default the start) is exported: the customer's
        # billing periods follow it.
        assert subscription["billing_cycle_anchor"] == subscription["start_date"]
        assert conn.execute(
            "select billing_cycle_anchor from stripe_raw.subscriptions where id = ?",
            [subscription.id],
        ).fetchone() == (str(subscription["billing_cycle_anchor"]),)
        # Current API versions keep the period on the items only; the export still has it.
        assert "current_period_start" not in subscription
        start, end = conn.execute(
            "select current_period_start, current_period_end from stripe_raw.subscriptions "
            "where id = ?",
            [subscription.id],
        ).fetchone()
        item_period = subscription["items"]["data"][0]
        assert (int(start), int(end)) == (
            item_period["current_period_start"],
            item_period["current_period_end"],
        )
        assert sorted(
            conn.execute(
                "select price from stripe_raw.subscription_items where subscription = ?",
                [subscription.id],
            ).fetchall()
        ) == sorted([(per_unit.id,), (tiered.id,)])
        assert conn.execute(
            "select unit_amount_decimal, recurring_usage_type, lookup_key from stripe_raw.prices "
            "where id = ?",
            [per_unit.id],
        ).fetchone() == ("0.0003", "metered", "starter:nimbus_large__input_tokens")
        assert sorted(
            conn.execute(
                "select price from stripe_raw.invoice_line_items where invoice = ?",
                [invoice["id"]],
            ).fetchall()
        ) == sorted([(per_unit.id,), (tiered.id,)])
    with (tmp_path / "stripe" / "prices.csv").open() as handle:
        rows = {row.split(",")[0]: row for row in handle}
    assert "graduated" in rows[tiered.id]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"currency": "usd", "unit_amount": 5, "colour": "red"}, "colour"),
        (
            {
                "currency": "usd",
                "billing_scheme": "tiered",
                "tiers_mode": "graduated",
                "tiers": [{"up_to": 10, "unit_amount": 1}],
            },
            "up_to 'inf'",
        ),
        ({"currency": "usd", "unit_amount": 5, "product": "prod_missing"}, "No such product"),
    ],
)
def test_prices_are_checked_like_stripe(
    client: stripe.StripeClient, params: dict[str, object], message: str
) -> None:
    product = client.v1.products.create(params={"name": "P"})
    with pytest.raises(stripe.InvalidRequestError, match=message):
        client.v1.prices.create(params={"product": product.id, **params})  # type: ignore[arg-type]

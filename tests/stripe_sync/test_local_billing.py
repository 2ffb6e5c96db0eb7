"""The local Stripe bills a period from its own meter events and prices, then delivers signed,
duplicated, shuffled webhooks to the real receiver, which drives the ledger and dunning."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import stripe
import uvicorn

from ledger import Ledger
from stripe_local.billing import line_amount, round_half_away_from_zero
from stripe_local.server import LocalStripeServer, free_port
from stripe_sync.meter_events import ensure_meters
from stripe_sync.webhooks import create_webhook_app

OCT_1, NOV_1 = 1_790_812_800, 1_793_491_200  # 2026-10-01, 2026-11-01 (UTC)
USAGE = {  # customer: (requests, tokens)
    "acme": (40, 2_500),
    "beta": (7, 900),
    "gamma": (3, 100),
}
PAYMENT = {"acme": "succeeds", "beta": "declines:2", "gamma": "declines:forever"}


@contextmanager
def receiver(ledger_url: str, secret: str, port: int) -> Iterator[None]:
    server = uvicorn.Server(
        uvicorn.Config(
            create_webhook_app(ledger_url, secret),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)


def local(server: LocalStripeServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(f"{server.url}{path}", data=json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_a_billed_month_reaches_the_ledger_through_duplicated_shuffled_webhooks(
    ledger_url: str,
) -> None:
    Ledger.connect(ledger_url).close()
    with LocalStripeServer(now="2026-11-03T00:00:00Z") as server:
        client = stripe.StripeClient(
            "sk_test_billing",
            base_addresses={"api": server.url, "meter_events": server.url},
            max_network_retries=0,
        )
        meters = ensure_meters(client, [("requests", "Requests"), ("tokens", "Tokens")])
        product = client.v1.products.create(params={"name": "Nimbus"})
        per_request = client.v1.prices.create(
            params={
                "product": product.id,
                "currency": "usd",
                "unit_amount_decimal": "0.35",
                "recurring": {
                    "interval": "month",
                    "usage_type": "metered",
                    "meter": meters["requests"],
                },
            }
        )
        tokens = client.v1.prices.create(
            params={
                "product": product.id,
                "currency": "usd",
                "billing_scheme": "tiered",
                "tiers_mode": "graduated",
                "tiers": [
                    {"up_to": 1000, "unit_amount_decimal": "0.5"},
                    {"up_to": "inf", "unit_amount_decimal": "0.25", "flat_amount": 100},
                ],
                "recurring": {
                    "interval": "month",
                    "usage_type": "metered",
                    "meter": meters["tokens"],
                },
            }
        )
        for name, (requests, token_count) in USAGE.items():
            customer = client.v1.customers.create(
                params={
                    "email": f"{name}@example.com",
                    "metadata": {"meterbook_customer_id": name, "local_payment": PAYMENT[name]},
                }
            )
            client.v1.subscriptions.create(
                params={
                    "customer": customer.id,
                    "items": [{"price": per_request.id}, {"price": tokens.id}],
                    "backdate_start_date": OCT_1,
                }
            )
            for event_name, value in (("requests", requests), ("tokens", token_count)):
                client.v1.billing.meter_events.create(
                    params={
                        "event_name": event_name,
                        "timestamp": OCT_1 + 86_400,
                        "payload": {"stripe_customer_id": customer.id, "value": str(value)},
                    }
                )
        port = free_port()
        endpoint = client.v1.webhook_endpoints.create(
            params={"url": f"http://127.0.0.1:{port}/stripe/webhooks", "enabled_events": ["*"]}
        )
        billed = local(server, "/_local/bill", {"period_start": OCT_1, "period_end": NOV_1})
        with receiver(ledger_url, str(endpoint.secret), port):
            report = local(
                server,
                "/_local/webhooks/flush",
                {"duplicate": 0.5, "shuffle": True, "seed": 4, "delay_seconds": 0.01},
            )
    assert report["deliveries"] == {"200": sum(report["deliveries"].values())}
    assert sum(report["deliveries"].values()) > report["events"]  # some arrived twice

    # An independent computation of each invoice: 0.35 per request; tokens graduated.
    def expected_total(requests: int, token_count: int) -> int:
        per_unit = {"billing_scheme": "per_unit", "unit_amount_decimal": "0.35"}
        tiered = {
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": [
                {"up_to": 1000, "unit_amount_decimal": "0.5", "flat_amount": 0},
                {"up_to": None, "unit_amount_decimal": "0.25", "flat_amount": 100},
            ],
        }
        return round_half_away_from_zero(line_amount(per_unit, requests)) + (
            round_half_away_from_zero(line_amount(tiered, token_count))
        )

    totals = {name: expected_total(*usage) for name, usage in USAGE.items()}
    assert totals == {"acme": 14 + 975, "beta": 2 + 450, "gamma": 1 + 50}  # by hand
    assert sorted(i["total"] for i in billed["invoices"]) == sorted(totals.values())

    with Ledger.connect(ledger_url) as book:
        balances = {a: v for (a, _), v in book.balances().items()}
        dunning = {
            i["customer"]: (s.state if (s := book.dunning_state(i["id"])) else None)
            for i in billed["invoices"]
        }
        assert book.verify(recompute_hashes=True).ok
        assert book.verify().transactions == 3 + 2 + 1  # finalised x3, paid x2, written off
    assert sorted(dunning.values(), key=str) == sorted(
        [None, "recovered", "uncollectible"], key=str
    )
    for name in USAGE:
        assert balances[f"customer:{name}:receivable"] == 0
    assert balances["platform:stripe_clearing"] == Decimal(totals["acme"] + totals["beta"])
    assert balances["platform:bad_debt"] == Decimal(totals["gamma"])
    with psycopg.connect(ledger_url) as conn:
        assert conn.execute(
            "select count(*), sum(deliveries) > count(*) from stripe_sync.webhook_events"
        ).fetchone() == (report["events"], True)


@pytest.mark.parametrize(
    ("mode", "quantity", "expected"),
    [
        ("graduated", 2_500, Decimal(975)),
        ("volume", 2_500, Decimal(725)),
        ("graduated", 1_000, Decimal(500)),
        ("volume", 1_000, Decimal(500)),
    ],
)
def test_tiered_prices(mode: str, quantity: int, expected: Decimal) -> None:
    price = {
        "billing_scheme": "tiered",
        "tiers_mode": mode,
        "tiers": [
            {"up_to": 1000, "unit_amount_decimal": "0.5", "flat_amount": 0},
            {"up_to": None, "unit_amount_decimal": "0.25", "flat_amount": 100},
        ],
    }
    assert line_amount(price, quantity) == expected

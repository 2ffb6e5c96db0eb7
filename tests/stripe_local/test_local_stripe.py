"""The local Stripe behaves like Stripe for what we use, driven by the real stripe-python client."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest
import stripe

from stripe_local.server import LocalStripeServer

NOW = 1_791_158_400  # 2026-10-05T00:00:00Z
DAY = 86_400


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalStripeServer]:
    with LocalStripeServer(db_path=tmp_path / "stripe.sqlite3", now="2026-10-05T00:00:00Z") as s:
        yield s


def client_for(server: LocalStripeServer, key: str = "sk_test_123") -> stripe.StripeClient:
    return stripe.StripeClient(
        key,
        base_addresses={"api": server.url, "meter_events": server.url},
        max_network_retries=0,
    )


def make_meter(client: stripe.StripeClient, event_name: str = "tokens") -> stripe.billing.Meter:
    return client.v1.billing.meters.create(
        params={
            "display_name": event_name,
            "event_name": event_name,
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
            "value_settings": {"event_payload_key": "value"},
        }
    )


def send(client: stripe.StripeClient, customer: str, value: int, **extra: object) -> object:
    params = {
        "event_name": "tokens",
        "timestamp": NOW - DAY,
        "payload": {"stripe_customer_id": customer, "value": str(value)},
        **extra,
    }
    options = {"idempotency_key": extra.pop("key")} if "key" in extra else {}
    params.pop("key", None)
    return client.v1.billing.meter_events.create(params=params, options=options)  # type: ignore[arg-type]


def test_meter_events_are_summed_per_customer(server: LocalStripeServer) -> None:
    client = client_for(server)
    customer = client.v1.customers.create(params={"email": "a@example.com"})
    meter = make_meter(client)
    send(client, customer.id, 5, identifier="a")
    send(client, customer.id, 7, identifier="b")
    summaries = client.v1.billing.meters.event_summaries.list(
        meter.id,
        params={"customer": customer.id, "start_time": NOW - 2 * DAY, "end_time": NOW},
    )
    assert [s.aggregated_value for s in summaries.data] == [12]


def test_a_repeated_identifier_is_rejected(server: LocalStripeServer) -> None:
    client = client_for(server)
    customer = client.v1.customers.create()
    make_meter(client)
    send(client, customer.id, 5, identifier="same")
    with pytest.raises(stripe.InvalidRequestError) as error:
        send(client, customer.id, 5, identifier="same")
    assert error.value.code == "resource_already_exists"
    assert len(server.store.meter_events()) == 1


def test_idempotency_key_replays_and_refuses_other_parameters(server: LocalStripeServer) -> None:
    client = client_for(server)
    customer = client.v1.customers.create()
    make_meter(client)
    first = send(client, customer.id, 5, identifier="x1", key="k1")
    replay = send(client, customer.id, 5, identifier="x1", key="k1")
    assert replay == first
    with pytest.raises(stripe.IdempotencyError):
        send(client, customer.id, 6, identifier="x1", key="k1")
    assert len(server.store.meter_events()) == 1


def test_timestamps_outside_stripes_window_are_rejected(server: LocalStripeServer) -> None:
    client = client_for(server)
    customer = client.v1.customers.create()
    make_meter(client)
    with pytest.raises(stripe.InvalidRequestError, match="35"):
        send(client, customer.id, 1, timestamp=NOW - 36 * DAY)
    with pytest.raises(stripe.InvalidRequestError, match="future"):
        send(client, customer.id, 1, timestamp=NOW + 600)
    send(client, customer.id, 1, timestamp=NOW - 34 * DAY)


def test_strict_about_parameters_customers_and_keys(server: LocalStripeServer) -> None:
    client = client_for(server)
    customer = client.v1.customers.create()
    make_meter(client)
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        send(client, customer.id, 1, colour="blue")
    assert unknown.value.code == "parameter_unknown"
    with pytest.raises(stripe.InvalidRequestError, match="No such customer"):
        send(client, "cus_nobody", 1)
    with pytest.raises(stripe.InvalidRequestError, match="whole number"):
        send(client, customer.id, 1, payload={"stripe_customer_id": customer.id, "value": "1.5"})
    with pytest.raises(stripe.InvalidRequestError, match="No active meter"):
        send(client, customer.id, 1, event_name="nope")
    with pytest.raises(stripe.AuthenticationError):
        client_for(server, key="sk_live_nope").v1.customers.list()
    with pytest.raises(stripe.InvalidRequestError, match="already exists"):
        make_meter(client)


def test_lists_paginate(server: LocalStripeServer) -> None:
    client = client_for(server)
    created = {client.v1.customers.create().id for _ in range(7)}
    page = client.v1.customers.list(params={"limit": 3})
    assert len(page.data) == 3 and page.has_more
    assert {c.id for c in page.auto_paging_iter()} == created


def test_state_survives_a_restart_and_customers_seed_from_an_export(tmp_path: Path) -> None:
    export = tmp_path / "customers.csv"
    with export.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "email", "name", "currency", "created", "metadata"])
        writer.writerow(["cus_exported01", "e@example.com", "E", "usd", "1756684800", "{}"])
    db = tmp_path / "stripe.sqlite3"
    with LocalStripeServer(
        db_path=db, now="2026-10-05T00:00:00Z", seed_customers_csv=export
    ) as first:
        client = client_for(first)
        make_meter(client)
        send(client, "cus_exported01", 3, identifier="kept")
    with LocalStripeServer(
        db_path=db, now="2026-10-05T00:00:00Z", seed_customers_csv=export
    ) as second:
        assert [e["identifier"] for e in second.store.meter_events()] == ["kept"]
        assert client_for(second).v1.customers.retrieve("cus_exported01").email == "e@example.com"

"""The local Stripe behaves like Stripe for what we use, driven by the real stripe-python client."""

from __future__ import annotations

import csv
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe

from stripe_local.server import LocalStripeServer, free_port, is_running, start_detached

NOW = 1_791_158_400  # 2026-10-05T00:00:00Z
NOW_ISO = "2026-10-05T00:00:00Z"
DAY = 86_400


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalStripeServer]:
    with LocalStripeServer(db_path=tmp_path / "stripe.sqlite3", now=NOW_ISO) as s:
        yield s


@pytest.fixture
def client(server: LocalStripeServer) -> stripe.StripeClient:
    return client_for(server)


def client_for(server: LocalStripeServer, key: str = "sk_test_123") -> stripe.StripeClient:
    return stripe.StripeClient(
        key,
        base_addresses={"api": server.url, "meter_events": server.url},
        max_network_retries=0,
    )


def make_meter(
    client: stripe.StripeClient, event_name: str = "tokens", formula: str = "sum", key: str = ""
) -> stripe.billing.Meter:
    return client.v1.billing.meters.create(
        params={
            "display_name": event_name.title(),
            "event_name": event_name,
            "default_aggregation": {"formula": formula},  # type: ignore[typeddict-item]
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
            "value_settings": {"event_payload_key": "value"},
        },
        options={"idempotency_key": key} if key else {},
    )


def send(
    client: stripe.StripeClient, customer: str, value: int | str, key: str = "", **extra: Any
) -> stripe.billing.MeterEvent:
    params = {
        "event_name": "tokens",
        "timestamp": NOW - DAY,
        "payload": {"stripe_customer_id": customer, "value": str(value)},
        **extra,
    }
    return client.v1.billing.meter_events.create(
        params=params,  # type: ignore[arg-type]
        options={"idempotency_key": key} if key else {},
    )


def get_json(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_creates_customers_meters_and_meter_events(
    server: LocalStripeServer, client: stripe.StripeClient
) -> None:
    customer = client.v1.customers.create(params={"email": "a@example.com", "name": "A"})
    assert customer.id.startswith("cus_") and customer.object == "customer"
    assert (customer.livemode, customer.created) == (False, NOW)
    assert client.v1.customers.retrieve(customer.id).email == "a@example.com"

    meter = make_meter(client)
    assert meter.object == "billing.meter" and meter.status == "active"
    assert meter.default_aggregation.formula == "sum"
    assert client.v1.billing.meters.retrieve(meter.id).event_name == "tokens"

    event = send(client, customer.id, 12, identifier="evt-1")
    assert event.object == "billing.meter_event"
    assert (event.identifier, event.timestamp, event.payload["value"]) == ("evt-1", NOW - DAY, "12")
    generated = send(client, customer.id, 1)
    assert generated.identifier and generated.identifier != "evt-1"

    stored = server.store.meter_events()
    assert [e["identifier"] for e in stored] == ["evt-1", generated.identifier]
    status, stats = get_json(f"{server.url}/_local/stats")
    assert status == 200
    assert {k: stats[k] for k in ("customers", "meters", "meter_events")} == {
        "customers": 1,
        "meters": 1,
        "meter_events": 2,
    }
    status, events = get_json(f"{server.url}/_local/meter_events")
    assert status == 200 and [e["identifier"] for e in events] == ["evt-1", generated.identifier]


def test_a_repeated_identifier_is_rejected(
    server: LocalStripeServer, client: stripe.StripeClient
) -> None:
    customer = client.v1.customers.create()
    make_meter(client)
    send(client, customer.id, 5, identifier="same")
    with pytest.raises(stripe.InvalidRequestError, match="already exists with identifier same"):
        send(client, customer.id, 5, identifier="same")
    with pytest.raises(stripe.InvalidRequestError) as error:
        send(client, customer.id, 9, identifier="same", key="another-key")
    assert (error.value.code, error.value.http_status) == ("duplicate_meter_event", 400)
    assert error.value.param == "identifier"  # type: ignore[attr-defined]
    assert len(server.store.meter_events()) == 1
    with pytest.raises(stripe.InvalidRequestError, match="at most 100"):
        send(client, customer.id, 5, identifier="x" * 101)


def test_idempotency_key_replays_and_refuses_other_parameters(
    server: LocalStripeServer, client: stripe.StripeClient
) -> None:
    customer = client.v1.customers.create()
    meter = make_meter(client, key="meter:tokens")
    assert make_meter(client, key="meter:tokens").id == meter.id

    first = send(client, customer.id, 5, identifier="x1", key="k1")
    replay = send(client, customer.id, 5, identifier="x1", key="k1")
    assert replay == first
    assert first.last_response is not None and replay.last_response is not None
    assert "Idempotent-Replayed" not in first.last_response.headers
    assert replay.last_response.headers["Idempotent-Replayed"] == "true"
    with pytest.raises(stripe.IdempotencyError):
        send(client, customer.id, 6, identifier="x1", key="k1")
    with pytest.raises(stripe.IdempotencyError):  # a key is bound to its endpoint too
        client.v1.customers.create(options={"idempotency_key": "k1"})
    with pytest.raises(stripe.InvalidRequestError, match="Idempotency-Key"):
        send(client, customer.id, 5, key="k" * 256)
    assert len(server.store.meter_events()) == 1
    _, stats = get_json(f"{server.url}/_local/stats")
    assert stats["idempotent_replays"] == 2


def test_a_request_that_failed_validation_saves_no_idempotent_result(
    server: LocalStripeServer, client: stripe.StripeClient
) -> None:
    make_meter(client)
    with pytest.raises(stripe.InvalidRequestError, match="No such customer"):
        send(client, "cus_later", 4, identifier="late", key="late")
    server.store.put({"id": "cus_later", "object": "customer", "created": NOW, "livemode": False})
    # Stripe saves nothing for a request that failed validation: the same key may be retried.
    event = send(client, "cus_later", 4, identifier="late", key="late")
    assert event.last_response is not None
    assert "Idempotent-Replayed" not in event.last_response.headers


def test_timestamps_outside_stripes_window_are_rejected(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create()
    make_meter(client)
    with pytest.raises(stripe.InvalidRequestError, match="35 calendar days") as old:
        send(client, customer.id, 1, timestamp=NOW - 36 * DAY)
    assert old.value.code == "timestamp_too_far_in_past"
    with pytest.raises(stripe.InvalidRequestError, match="future") as ahead:
        send(client, customer.id, 1, timestamp=NOW + 301)
    assert ahead.value.code == "timestamp_in_future"
    with pytest.raises(stripe.InvalidRequestError) as not_a_number:
        send(client, customer.id, 1, timestamp="soon")
    assert not_a_number.value.code == "parameter_invalid_integer"
    assert send(client, customer.id, 1, timestamp=NOW - 35 * DAY).timestamp == NOW - 35 * DAY
    assert send(client, customer.id, 1, timestamp=NOW + 300).timestamp == NOW + 300
    assert send(client, customer.id, 1, timestamp=None).timestamp == NOW


def test_strict_about_parameters(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create()
    make_meter(client)
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        send(client, customer.id, 1, colour="blue")
    assert (unknown.value.code, unknown.value.param) == ("parameter_unknown", "colour")  # type: ignore[attr-defined]
    with pytest.raises(stripe.InvalidRequestError, match="unknown parameter: shoe_size"):
        client.v1.customers.create(params={"shoe_size": "44"})  # type: ignore[typeddict-unknown-key]
    with pytest.raises(stripe.InvalidRequestError, match="unknown parameter: colour"):
        client.v1.billing.meters.list(params={"colour": "blue"})  # type: ignore[typeddict-unknown-key]
    send(client, customer.id, 1, expand=["payload"])  # expand is accepted and ignored
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.billing.meter_events.create(params={"event_name": "tokens"})  # type: ignore[typeddict-item]
    assert missing.value.code == "parameter_missing"
    for bad in ("1.5", "-3", "", "1e3", " 7"):
        with pytest.raises(stripe.InvalidRequestError, match="whole number"):
            send(client, customer.id, bad)
    with pytest.raises(stripe.InvalidRequestError, match="No active meter"):
        send(client, customer.id, 1, event_name="nope")
    with pytest.raises(stripe.InvalidRequestError, match="formula"):
        make_meter(client, event_name="other", formula="average")
    with pytest.raises(stripe.InvalidRequestError, match="already exists") as taken:
        make_meter(client)
    assert taken.value.code == "resource_already_exists"
    make_meter(client, event_name="requests", formula="count")


def test_unknown_customers_are_rejected(
    server: LocalStripeServer, client: stripe.StripeClient
) -> None:
    make_meter(client)
    with pytest.raises(stripe.InvalidRequestError, match="No such customer: 'cus_nobody'") as err:
        send(client, "cus_nobody", 1)
    assert err.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError) as absent:
        client.v1.customers.retrieve("cus_nobody")
    assert (absent.value.code, absent.value.http_status) == ("resource_missing", 404)
    assert server.store.meter_events() == []


def test_keys_are_checked(server: LocalStripeServer) -> None:
    with pytest.raises(stripe.AuthenticationError):
        client_for(server, key="sk_live_nope").v1.customers.list()
    with pytest.raises(stripe.AuthenticationError):
        client_for(server, key="rk_test_123").v1.billing.meters.list()
    status, body = get_json(f"{server.url}/v1/customers")
    assert status == 401
    assert set(body["error"]) == {"type", "code", "message", "param"}
    assert body["error"]["type"] == "invalid_request_error"
    status, body = get_json(
        f"{server.url}/v1/nothing_here", headers={"Authorization": "Bearer sk_test_1"}
    )
    assert status == 404 and "Unrecognized request URL" in body["error"]["message"]


def test_lists_paginate_newest_first(client: stripe.StripeClient) -> None:
    created = [client.v1.customers.create(params={"name": f"c{i}"}).id for i in range(7)]
    page = client.v1.customers.list(params={"limit": 3})
    assert page.object == "list" and page.url == "/v1/customers"
    assert [c.id for c in page.data] == created[::-1][:3] and page.has_more
    assert [c.id for c in page.auto_paging_iter()] == created[::-1]
    last = client.v1.customers.list(params={"limit": 3, "starting_after": created[1]})
    assert [c.id for c in last.data] == [created[0]] and not last.has_more
    before = client.v1.customers.list(params={"limit": 2, "ending_before": created[2]})
    assert [c.id for c in before.data] == created[::-1][2:4] and before.has_more
    for bad in (0, 101):
        with pytest.raises(stripe.InvalidRequestError, match="limit"):
            client.v1.customers.list(params={"limit": bad})

    names = [f"meter_{i}" for i in range(5)]
    for name in names:
        make_meter(client, event_name=name)
    meters = client.v1.billing.meters.list(params={"limit": 2}).auto_paging_iter()
    assert [m.event_name for m in meters] == names[::-1]


def test_event_summaries_aggregate_per_customer_and_window(client: stripe.StripeClient) -> None:
    a = client.v1.customers.create().id
    b = client.v1.customers.create().id
    meter = make_meter(client)
    send(client, a, 5, timestamp=NOW - 2 * DAY)
    send(client, a, 7, timestamp=NOW - DAY + 3600)
    send(client, a, 100, timestamp=NOW)  # end_time is exclusive
    send(client, b, 1000, timestamp=NOW - DAY)

    def summaries(customer: str, **extra: Any) -> list[stripe.billing.MeterEventSummary]:
        params = {"customer": customer, "start_time": NOW - 3 * DAY, "end_time": NOW, **extra}
        return client.v1.billing.meters.event_summaries.list(meter.id, params=params).data  # type: ignore[arg-type]

    [total] = summaries(a)
    assert total.object == "billing.meter_event_summary" and total.meter == meter.id
    assert (total.aggregated_value, total.start_time, total.end_time) == (12, NOW - 3 * DAY, NOW)
    assert [s.aggregated_value for s in summaries(b)] == [1000]
    daily = summaries(a, value_grouping_window="day")
    assert [(s.start_time, s.aggregated_value) for s in daily] == [
        (NOW - DAY, 7),
        (NOW - 2 * DAY, 5),
        (NOW - 3 * DAY, 0),
    ]
    with pytest.raises(stripe.InvalidRequestError, match="minute"):
        summaries(a, start_time=NOW - DAY + 1)
    with pytest.raises(stripe.InvalidRequestError, match="No such customer"):
        summaries("cus_nobody")

    counted = make_meter(client, event_name="calls", formula="count")
    send(client, a, 40, event_name="calls")
    send(client, a, 2, event_name="calls")
    [calls] = client.v1.billing.meters.event_summaries.list(
        counted.id, params={"customer": a, "start_time": NOW - 3 * DAY, "end_time": NOW}
    ).data
    assert calls.aggregated_value == 2


def test_state_survives_a_restart_and_customers_seed_from_an_export(tmp_path: Path) -> None:
    export = tmp_path / "customers.csv"
    with export.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "email", "name", "currency", "created", "metadata"])
        writer.writerow(["cus_exported01", "e@example.com", "E", "usd", "1756684800", "{}"])
        writer.writerow(["cus_exported02", "f@example.com", "F", "eur", "1756684801", '{"t":"x"}'])
    db = tmp_path / "state" / "stripe.sqlite3"
    with LocalStripeServer(db_path=db, now=NOW_ISO, seed_customers_csv=export) as first:
        client = client_for(first)
        make_meter(client)
        send(client, "cus_exported01", 3, identifier="kept", key="kept")
        assert first.store.load_customers_csv(export) == 2  # seeding again changes nothing
        assert first.store.count("customer") == 2
    with LocalStripeServer(db_path=db, now=NOW_ISO, seed_customers_csv=export) as second:
        client = client_for(second)
        assert [e["identifier"] for e in second.store.meter_events()] == ["kept"]
        seeded = client.v1.customers.retrieve("cus_exported02")
        assert (seeded.email, seeded.currency, seeded.created) == (
            "f@example.com",
            "eur",
            1756684801,
        )
        assert seeded.metadata.to_dict() == {"t": "x"}
        assert [c.id for c in client.v1.customers.list().data] == [
            "cus_exported02",
            "cus_exported01",
        ]
        replay = send(client, "cus_exported01", 3, identifier="kept", key="kept")
        assert replay.last_response is not None
        assert replay.last_response.headers["Idempotent-Replayed"] == "true"
        with pytest.raises(stripe.InvalidRequestError, match="already exists"):
            make_meter(client)
        assert second.store.count("customer") == 2


def test_detached_server_runs_in_its_own_process(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    assert not is_running(url)
    process = start_detached(port=port, db_path=tmp_path / "detached.sqlite3", now=NOW_ISO)
    try:
        for _ in range(100):
            if is_running(url) or process.poll() is not None:
                break
            time.sleep(0.1)
        assert is_running(url), (tmp_path / "detached.log").read_text()
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert (tmp_path / "detached.log").exists()

"""Customers, meters and meter events behave as Stripe's do, driven by the real client."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from stripe_local.server import LocalStripeServer
from tests.stripe_local.helpers import (
    DAY,
    NOW,
    client_for,
    http,
    make_meter,
    send,
    stats,
)


def test_creates_customers_meters_and_meter_events(
    server: LocalStripeServer, client: stripe.StripeClient
) -> None:
    customer = client.v1.customers.create(
        params={"email": "a@example.com", "name": "A", "metadata": {"plan_id": "pro"}}
    )
    assert customer.id.startswith("cus_") and customer.object == "customer"
    assert (customer.livemode, customer.created) == (False, NOW)
    fetched = client.v1.customers.retrieve(customer.id)
    assert (fetched.email, fetched.metadata.to_dict()) == ("a@example.com", {"plan_id": "pro"})

    meter = make_meter(client)
    assert meter.id.startswith("mtr_") and meter.object == "billing.meter"
    assert meter.status == "active" and meter.default_aggregation.formula == "sum"
    assert client.v1.billing.meters.retrieve(meter.id).event_name == "tokens"

    event = send(client, customer.id, 12, identifier="evt-1")
    assert (event.object, event.livemode, event.created) == ("billing.meter_event", False, NOW)
    assert (event.identifier, event.timestamp) == ("evt-1", NOW - DAY)
    assert event.payload.to_dict() == {"stripe_customer_id": customer.id, "value": "12"}
    generated = send(client, customer.id, 1)
    assert generated.identifier and generated.identifier != "evt-1"

    status, _, events = http(f"{server.url}/_local/meter_events")
    assert status == 200 and [e["identifier"] for e in events] == ["evt-1", generated.identifier]
    counts = stats(server)
    assert (counts["customers"], counts["meters"], counts["meter_events"]) == (1, 1, 2)
    assert counts["requests_by_path"]["POST /v1/billing/meter_events"] == 2
    assert counts["requests_by_path"]["GET /v1/customers/{id}"] == 1


def test_a_repeated_identifier_is_refused_as_stripe_does(server: LocalStripeServer) -> None:
    # Retries allowed: Stripe's Stripe-Should-Retry: false must stop the client retrying.
    client = client_for(server, retries=2)
    customer = client.v1.customers.create()
    make_meter(client)
    send(client, customer.id, 5, identifier="same")
    with pytest.raises(stripe.InvalidRequestError) as error:
        send(client, customer.id, 9, identifier="same", key="another-key")
    assert error.value.http_status == 400
    assert error.value.json_body == {
        "error": {
            "type": "invalid_request_error",
            "code": None,
            "message": "An event already exists with identifier same.",
            "param": None,
        }
    }
    assert error.value.headers["Stripe-Should-Retry"] == "false"
    assert stats(server)["requests_by_path"]["POST /v1/billing/meter_events"] == 2
    # Identifiers are unique account-wide, not per meter; the first event stands.
    make_meter(client, event_name="calls", formula="count")
    with pytest.raises(stripe.InvalidRequestError, match="already exists with identifier same"):
        send(client, customer.id, 5, identifier="same", event_name="calls")
    assert [e["payload"]["value"] for e in server.store.meter_events()] == ["5"]
    with pytest.raises(stripe.InvalidRequestError, match="at most 100"):
        send(client, customer.id, 5, identifier="x" * 101)
    assert send(client, customer.id, 5, identifier="x" * 100).identifier == "x" * 100


def test_timestamps_outside_stripes_window_are_refused(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create()
    make_meter(client)
    with pytest.raises(stripe.InvalidRequestError, match="35 calendar days") as old:
        send(client, customer.id, 1, timestamp=NOW - 35 * DAY - 1)
    assert (old.value.code, old.value.param) == ("timestamp_too_far_in_past", "timestamp")  # type: ignore[attr-defined]
    with pytest.raises(stripe.InvalidRequestError, match="future") as ahead:
        send(client, customer.id, 1, timestamp=NOW + 301)
    assert ahead.value.code == "timestamp_in_future"
    with pytest.raises(stripe.InvalidRequestError) as not_a_number:
        send(client, customer.id, 1, timestamp="soon")
    assert not_a_number.value.code == "parameter_invalid_integer"
    assert send(client, customer.id, 1, timestamp=NOW - 35 * DAY).timestamp == NOW - 35 * DAY
    assert send(client, customer.id, 1, timestamp=NOW + 300).timestamp == NOW + 300
    assert send(client, customer.id, 1, timestamp=None).timestamp == NOW  # default: now


def test_payloads_are_checked_against_the_meter(
    server: LocalStripeServer, client: stripe.StripeClient
) -> None:
    customer = client.v1.customers.create()
    make_meter(client)
    with pytest.raises(stripe.InvalidRequestError, match="No such customer: 'cus_nobody'") as err:
        send(client, "cus_nobody", 1)
    assert (err.value.code, err.value.param) == ("resource_missing", "payload[stripe_customer_id]")  # type: ignore[attr-defined]
    for bad in ("1.5", "--3", "", "1e3", " 7", "七", "+3"):
        with pytest.raises(stripe.InvalidRequestError, match="whole number"):
            send(client, customer.id, bad)
    with pytest.raises(stripe.InvalidRequestError) as missing_value:
        client.v1.billing.meter_events.create(
            params={"event_name": "tokens", "payload": {"stripe_customer_id": customer.id}}
        )
    assert (missing_value.value.code, missing_value.value.param) == (  # type: ignore[attr-defined]
        "parameter_missing",
        "payload[value]",
    )
    with pytest.raises(stripe.InvalidRequestError, match="No active meter"):
        send(client, customer.id, 1, event_name="nope")
    assert server.store.meter_events() == []

    custom = client.v1.billing.meters.create(
        params={
            "display_name": "Bytes",
            "event_name": "bytes",
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"event_payload_key": "account", "type": "by_id"},
            "value_settings": {"event_payload_key": "bytes_used"},
        }
    )
    assert custom.customer_mapping.event_payload_key == "account"
    event = client.v1.billing.meter_events.create(
        params={"event_name": "bytes", "payload": {"account": customer.id, "bytes_used": "7"}}
    )
    assert event.payload["bytes_used"] == "7"
    with pytest.raises(stripe.InvalidRequestError, match=r"payload\[account\]"):
        send(client, customer.id, 1, event_name="bytes")


def test_event_names_are_unique_among_active_meters(
    server: LocalStripeServer, client: stripe.StripeClient
) -> None:
    customer = client.v1.customers.create()
    meter = make_meter(client)
    with pytest.raises(stripe.InvalidRequestError, match="already exists") as taken:
        make_meter(client)
    assert taken.value.code == "resource_already_exists"
    inactive = client.v1.billing.meters.deactivate(meter.id)
    assert inactive.status == "inactive" and inactive.status_transitions.deactivated_at == NOW
    with pytest.raises(stripe.InvalidRequestError, match="No active meter"):
        send(client, customer.id, 1)
    replacement = make_meter(client)
    with pytest.raises(stripe.InvalidRequestError, match="already exists"):
        client.v1.billing.meters.reactivate(meter.id)
    listed = client.v1.billing.meters.list(params={"status": "active"}).data
    assert [m.id for m in listed] == [replacement.id]
    with pytest.raises(stripe.InvalidRequestError) as absent:
        client.v1.billing.meters.retrieve("mtr_nothing")
    assert (absent.value.http_status, absent.value.code) == (404, "resource_missing")


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
    hourly = summaries(a, start_time=NOW - DAY, end_time=NOW - DAY + 2 * 3600)
    assert [s.aggregated_value for s in hourly] == [7]
    by_hour = summaries(
        a, start_time=NOW - DAY, end_time=NOW - DAY + 2 * 3600, value_grouping_window="hour"
    )
    assert [s.aggregated_value for s in by_hour] == [7, 0]
    with pytest.raises(stripe.InvalidRequestError, match="minute"):
        summaries(a, start_time=NOW - DAY + 1)
    with pytest.raises(stripe.InvalidRequestError, match="day boundaries"):
        summaries(a, start_time=NOW - DAY + 3600, value_grouping_window="day")
    with pytest.raises(stripe.InvalidRequestError, match="must be one of day, hour"):
        summaries(a, value_grouping_window="week")
    with pytest.raises(stripe.InvalidRequestError, match="No such customer"):
        summaries("cus_nobody")

    counted = make_meter(client, event_name="calls", formula="count")
    last = make_meter(client, event_name="seats", formula="last")
    for value in (40, 2):
        send(client, a, value, event_name="calls")
        send(client, a, value, event_name="seats")
    window = {"customer": a, "start_time": NOW - 3 * DAY, "end_time": NOW}
    [calls] = client.v1.billing.meters.event_summaries.list(counted.id, params=window).data
    [seats] = client.v1.billing.meters.event_summaries.list(last.id, params=window).data
    assert (calls.aggregated_value, seats.aggregated_value) == (2, 2)


def test_a_negative_value_corrects_usage_recorded_before(
    server: LocalStripeServer, client: stripe.StripeClient
) -> None:
    """Stripe's documented correction: a negative meter event lowers the period's sum."""
    customer = client.v1.customers.create()
    make_meter(client)
    send(client, customer.id, 7, timestamp=NOW - 60)
    send(client, customer.id, "-3", timestamp=NOW - 30)
    assert server.store.meter_event_sum("tokens", customer.id, NOW - 3600, NOW + 1) == 4

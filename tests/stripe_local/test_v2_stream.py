"""The v2 meter event stream: sessions, batches of up to 100, async validation, dedup."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import stripe

from stripe_local.server import LocalStripeServer
from tests.stripe_local.helpers import DAY, NOW, client_for, make_meter

EVENT_TIME = "2026-10-04T00:00:00Z"  # a day before the server's clock


def event(customer: str, value: int, identifier: str, **extra: object) -> dict[str, object]:
    return {
        "event_name": "tokens",
        "identifier": identifier,
        "timestamp": EVENT_TIME,
        "payload": {"stripe_customer_id": customer, "value": str(value)},
        **extra,
    }


def stream_client(server: LocalStripeServer, client: stripe.StripeClient) -> stripe.StripeClient:
    session = client.v2.billing.meter_event_session.create()
    return client_for(server, key=session.authentication_token)


def customer(client: stripe.StripeClient) -> str:
    return client.v1.customers.create(params={"email": "a@example.com"}).id


def test_a_batch_is_recorded_and_duplicates_are_ignored(
    server: LocalStripeServer, client: stripe.StripeClient
) -> None:
    make_meter(client)
    who = customer(client)
    stream = stream_client(server, client)
    batch = [event(who, n, f"id-{n}") for n in range(1, 101)]
    stream.v2.billing.meter_event_stream.create(params={"events": batch})  # type: ignore[typeddict-item]
    stream.v2.billing.meter_event_stream.create(params={"events": batch[:10]})  # type: ignore[typeddict-item]
    stats = server.store.meter_event_count()
    assert stats == 100
    assert server.store.meter_event_sum("tokens", who, NOW - 2 * DAY, NOW) == sum(range(1, 101))
    assert server.store.counter("v2_duplicates_ignored") == 10


def test_events_stripe_would_refuse_become_error_reports(
    server: LocalStripeServer, client: stripe.StripeClient
) -> None:
    make_meter(client)
    who = customer(client)
    stream = stream_client(server, client)
    stream.v2.billing.meter_event_stream.create(
        params={  # type: ignore[typeddict-item]
            "events": [
                event(who, 5, "good"),
                event("cus_nobody", 5, "unknown-customer"),
                event(who, 5, "too-old", timestamp="2026-08-01T00:00:00Z"),
                {**event(who, 5, "no-meter"), "event_name": "nothing"},
            ]
        }
    )
    assert server.store.meter_event_count() == 1
    errors = {
        e["event"]["identifier"]: e["code"] for e in server.store.list("billing.meter_event_error")
    }
    assert errors == {
        "unknown-customer": "resource_missing",
        "too-old": "timestamp_too_far_in_past",
        "no-meter": "resource_missing",
    }


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([], "1 to 100"),
        ([event("c", 1, f"e{n}") for n in range(101)], "1 to 100"),
        ([{**event("c", 1, "x"), "colour": "red"}], "unknown parameters colour"),
        ([event("c", 1, "x" * 101)], "at most 100"),
        ([{**event("c", 1, "x"), "payload": {"value": 3}}], "string values"),
        ([event("c", 1, "x", timestamp="yesterday")], "RFC 3339"),
    ],
)
def test_a_malformed_request_is_refused_whole(
    server: LocalStripeServer,
    client: stripe.StripeClient,
    events: list[dict[str, object]],
    message: str,
) -> None:
    stream = stream_client(server, client)
    with pytest.raises(stripe.InvalidRequestError, match=message):
        stream.v2.billing.meter_event_stream.create(params={"events": events})  # type: ignore[typeddict-item]


def test_sessions_need_the_secret_key_and_expire(tmp_path: Path) -> None:
    clock = [NOW]
    with LocalStripeServer(db_path=tmp_path / "s.sqlite3", clock=lambda: clock[0]) as server:
        client = client_for(server)
        make_meter(client)
        who = customer(client)
        stream = stream_client(server, client)
        with pytest.raises(stripe.AuthenticationError):
            client_for(server, key="mes_tok_forged").v2.billing.meter_event_stream.create(
                params={"events": [event(who, 1, "a")]}  # type: ignore[typeddict-item]
            )
        clock[0] += 15 * 60
        with pytest.raises(stripe.TemporarySessionExpiredError):
            stream.v2.billing.meter_event_stream.create(params={"events": [event(who, 1, "a")]})  # type: ignore[typeddict-item]
        assert server.store.meter_event_count() == 0


def test_a_session_is_refused_without_a_secret_key(server: LocalStripeServer) -> None:
    request = urllib.request.Request(
        f"{server.url}/v2/billing/meter_event_session",
        data=b"{}",
        method="POST",
        headers={"Authorization": "Bearer pk_test_123", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 401
    assert "Invalid API Key" in json.loads(refused.value.read())["error"]["message"]

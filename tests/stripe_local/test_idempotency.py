"""Idempotency-Key: Stripe's replay, conflict and 24-hour rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import stripe

from stripe_local.server import LocalStripeServer
from tests.stripe_local.helpers import DAY, NOW, client_for, make_meter, send, stats


def test_a_key_replays_the_first_response_and_refuses_other_parameters(
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
    assert replay.last_response.headers["Idempotency-Key"] == "k1"
    with pytest.raises(stripe.IdempotencyError) as conflict:
        send(client, customer.id, 6, identifier="x1", key="k1")
    assert conflict.value.http_status == 400
    assert conflict.value.json_body["error"]["type"] == "idempotency_error"  # type: ignore[index]
    with pytest.raises(stripe.IdempotencyError):  # a key is bound to its endpoint too
        client.v1.customers.create(options={"idempotency_key": "k1"})
    assert len(server.store.meter_events()) == 1
    assert stats(server)["idempotent_replays"] == 2


def test_keys_are_at_most_255_characters_and_scoped_to_the_api_key(
    server: LocalStripeServer, client: stripe.StripeClient
) -> None:
    customer = client.v1.customers.create()
    make_meter(client)
    with pytest.raises(stripe.InvalidRequestError, match="Idempotency-Key"):
        send(client, customer.id, 5, key="k" * 256)
    send(client, customer.id, 5, identifier="long", key="k" * 255)
    other_account = client_for(server, key="sk_test_other")
    created = other_account.v1.customers.create(options={"idempotency_key": "k" * 255})
    assert created.last_response is not None
    assert "Idempotent-Replayed" not in created.last_response.headers


def test_a_request_that_failed_validation_saves_no_result(
    server: LocalStripeServer, client: stripe.StripeClient
) -> None:
    make_meter(client)
    with pytest.raises(stripe.InvalidRequestError, match="No such customer"):
        send(client, "cus_later", 4, identifier="late", key="late")
    server.store.put({"id": "cus_later", "object": "customer", "created": NOW, "livemode": False})
    event = send(client, "cus_later", 4, identifier="late", key="late")
    assert event.last_response is not None
    assert "Idempotent-Replayed" not in event.last_response.headers


def test_keys_expire_after_24_hours_by_the_servers_clock(tmp_path: Path) -> None:
    now = [NOW]
    with LocalStripeServer(db_path=tmp_path / "s.sqlite3", clock=lambda: now[0]) as server:
        client = client_for(server)
        first = client.v1.customers.create(params={"name": "A"}, options={"idempotency_key": "c"})
        now[0] += DAY
        again = client.v1.customers.create(params={"name": "A"}, options={"idempotency_key": "c"})
        assert again.id == first.id  # 24 hours exactly: still kept
        now[0] += 1
        later = client.v1.customers.create(params={"name": "B"}, options={"idempotency_key": "c"})
        assert later.id != first.id and later.created == NOW + DAY + 1

"""Strict about requests as Stripe is: keys, parameters, lists and error shapes."""

from __future__ import annotations

import base64

import pytest
import stripe

from stripe_local.server import LocalStripeServer
from tests.stripe_local.helpers import KEY, client_for, http, make_meter, send

ERROR_KEYS = {"type", "code", "message", "param"}


def test_only_secret_test_keys_are_accepted(server: LocalStripeServer) -> None:
    for bad in ("sk_live_nope", "rk_test_123", "pk_test_123", "sk_test_"):
        with pytest.raises(stripe.AuthenticationError) as error:
            client_for(server, key=bad).v1.customers.list()
        assert error.value.http_status == 401
    status, headers, body = http(f"{server.url}/v1/customers")
    assert status == 401 and set(body["error"]) == ERROR_KEYS
    assert body["error"]["type"] == "invalid_request_error"
    assert "You did not provide an API key" in body["error"]["message"]
    assert headers["www-authenticate"] == 'Basic realm="Stripe"'
    basic = base64.b64encode(f"{KEY}:".encode()).decode()  # curl -u sk_test_...:
    status, _, body = http(
        f"{server.url}/v1/customers", headers={"Authorization": f"Basic {basic}"}
    )
    assert status == 200 and body["object"] == "list"


def test_unknown_and_ill_typed_parameters_are_refused(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create()
    make_meter(client)
    cases = [
        (lambda: send(client, customer.id, 1, colour="blue"), "parameter_unknown", "colour"),
        (
            lambda: client.v1.customers.create(params={"shoe_size": "44"}),  # type: ignore[typeddict-unknown-key]
            "parameter_unknown",
            "shoe_size",
        ),
        (
            lambda: client.v1.billing.meters.list(params={"colour": "blue"}),  # type: ignore[typeddict-unknown-key]
            "parameter_unknown",
            "colour",
        ),
        (
            lambda: client.v1.billing.meters.create(
                params={
                    "display_name": "X",
                    "event_name": "x",
                    "default_aggregation": {"formula": "sum", "window": "day"},  # type: ignore[typeddict-unknown-key]
                }
            ),
            "parameter_unknown",
            "default_aggregation[window]",
        ),
        (
            lambda: client.v1.billing.meter_events.create(params={"event_name": "tokens"}),  # type: ignore[typeddict-item]
            "parameter_missing",
            "payload",
        ),
        (
            lambda: client.v1.billing.meters.create(
                params={
                    "display_name": "X",
                    "event_name": "x",
                    "default_aggregation": {"formula": "sum"},
                    "customer_mapping": {"event_payload_key": "who"},  # type: ignore[typeddict-item]
                }
            ),
            "parameter_missing",
            "customer_mapping[type]",
        ),
        (
            lambda: send(client, customer.id, 1, identifier=""),
            "parameter_invalid_empty",
            "identifier",
        ),
        (
            lambda: client.v1.customers.list(params={"limit": "many"}),  # type: ignore[typeddict-item]
            "parameter_invalid_integer",
            "limit",
        ),
    ]
    for call, code, param in cases:
        with pytest.raises(stripe.InvalidRequestError) as error:
            call()
        assert (error.value.code, error.value.param) == (code, param)  # type: ignore[attr-defined]
        assert error.value.http_status == 400
    with pytest.raises(stripe.InvalidRequestError, match="must be one of count, last, sum"):
        make_meter(client, event_name="other", formula="average")
    with pytest.raises(stripe.InvalidRequestError, match="must be one of by_id"):
        client.v1.billing.meters.create(
            params={
                "display_name": "X",
                "event_name": "x",
                "default_aggregation": {"formula": "sum"},
                "customer_mapping": {"event_payload_key": "who", "type": "by_email"},  # type: ignore[typeddict-item]
            }
        )
    with pytest.raises(stripe.InvalidRequestError, match="nested hashes"):
        client.v1.customers.create(params={"metadata": {"a": {"b": "c"}}})  # type: ignore[dict-item]
    with pytest.raises(stripe.InvalidRequestError, match="at most 40"):
        client.v1.customers.create(params={"metadata": {"k" * 41: "v"}})
    send(client, customer.id, 1, expand=["payload"])  # expand is a known parameter
    assert client.v1.customers.create(params={"metadata": ""}).metadata.to_dict() == {}


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
    assert len(client.v1.customers.list().data) == 7  # default limit 10
    for bad in (0, 101):
        with pytest.raises(stripe.InvalidRequestError, match="limit"):
            client.v1.customers.list(params={"limit": bad})
    with pytest.raises(stripe.InvalidRequestError, match="No such customer: 'cus_gone'"):
        client.v1.customers.list(params={"starting_after": "cus_gone"})

    names = [f"meter_{i}" for i in range(5)]
    for name in names:
        make_meter(client, event_name=name)
    meters = client.v1.billing.meters.list(params={"limit": 2}).auto_paging_iter()
    assert [m.event_name for m in meters] == names[::-1]


def test_responses_carry_stripes_headers_and_error_shapes(server: LocalStripeServer) -> None:
    auth = {"Authorization": f"Bearer {KEY}", "Stripe-Version": "2099-01-01.future"}
    status, headers, body = http(f"{server.url}/v1/customers", "email=a%40example.com", auth)
    assert status == 200 and body["email"] == "a@example.com"
    assert headers["stripe-version"] == "2099-01-01.future"  # any version is accepted
    assert headers["request-id"].startswith("req_")
    status, _, body = http(f"{server.url}/v1/nothing_here", headers=auth)
    assert status == 404 and set(body["error"]) == ERROR_KEYS
    assert "Unrecognized request URL" in body["error"]["message"]
    status, _, body = http(f"{server.url}/v1/customers", '{"email": "a@example.com"}', auth)
    assert status == 400 and body["error"]["code"] == "parameter_unknown"  # JSON is not a form
    status, _, body = http(f"{server.url}/v1/customers", "metadata[a]=1&metadata=2", auth)
    assert status == 400 and "nesting" in body["error"]["message"]

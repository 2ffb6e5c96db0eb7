"""Shared helpers: the real stripe-python client pointed at a local Stripe, and raw HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import stripe

from stripe_local.server import LocalStripeServer

NOW = 1_791_158_400  # 2026-10-05T00:00:00Z
NOW_ISO = "2026-10-05T00:00:00Z"
DAY = 86_400
KEY = "sk_test_123"


def client_for(server: LocalStripeServer, key: str = KEY, retries: int = 0) -> stripe.StripeClient:
    """The client the pipeline uses, with the local server as both API hosts."""
    return stripe.StripeClient(
        key,
        base_addresses={"api": server.url, "meter_events": server.url},
        max_network_retries=retries,
    )


def make_meter(
    client: stripe.StripeClient, event_name: str = "tokens", formula: str = "sum", key: str = ""
) -> stripe.billing.Meter:
    return client.v1.billing.meters.create(
        params={
            "display_name": event_name.title(),
            "event_name": event_name,
            "default_aggregation": {"formula": formula},
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
            "value_settings": {"event_payload_key": "value"},
        },
        options={"idempotency_key": key} if key else {},
    )


def send(
    client: stripe.StripeClient, customer: str, value: int | str, key: str = "", **extra: Any
) -> stripe.billing.MeterEvent:
    """A meter event for ``customer`` on the ``tokens`` meter, a day before ``NOW``."""
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


def http(
    url: str, body: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    """A raw request (POST when ``body`` is given): status, headers (lower-case names), JSON."""
    request = urllib.request.Request(
        url,
        data=body.encode() if body is not None else None,
        headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, lowered(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, lowered(error.headers), json.loads(error.read())


def lowered(headers: Any) -> dict[str, str]:
    """Header names in lower case (HTTP names are case-insensitive)."""
    return {name.lower(): value for name, value in headers.items()}


def stats(server: LocalStripeServer) -> dict[str, Any]:
    status, _, body = http(f"{server.url}/_local/stats")
    assert status == 200
    return body

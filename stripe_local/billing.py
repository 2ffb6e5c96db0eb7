"""Invoices and webhooks of the local Stripe: a second, independent computation of what each
customer owes (from meter events and Stripe prices), and signed event deliveries that arrive
duplicated and out of order on demand.

- ``POST /v1/webhook_endpoints`` registers a receiver; its ``secret`` signs every delivery.
- ``POST /_local/bill`` (``period_start``, ``period_end``) invoices every active subscription for
  that period: one line per subscription item, metered quantities from the meter's events in the
  period, per-unit (with ``transform_quantity`` for packages) or tiered (graduated or volume)
  prices, each line rounded to whole cents half
  away from zero. The invoice is finalised and paid, or declined, as the customer's metadata
  ``local_payment`` says: ``succeeds`` (default), ``declines:N`` (N failed attempts, then paid)
  or ``declines:forever`` (three failed attempts, then marked uncollectible). Each step is an
  event (``invoice.created``, ``invoice.finalized``, ``invoice.payment_failed``, ``invoice.paid``,
  ``invoice.marked_uncollectible``) queued for delivery.
- ``POST /_local/webhooks/flush`` (``duplicate`` share, ``shuffle``, ``seed``,
  ``delay_seconds`` before each delivery) delivers the queue
  to every endpoint, signed as Stripe signs, and reports what it sent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import stripe.params as core_params
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from stripe_local.errors import new_id, not_found
from stripe_local.params import check_parameters, string_param
from stripe_local.store import LocalStripeStore

API_VERSION = "2025-09-30.clover"
RETRY_SECONDS = 3 * 86_400
STEP_SECONDS = 3600


def round_half_away_from_zero(amount: Decimal) -> int:
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))  # HALF_UP is away from zero


def line_amount(price: dict[str, Any], quantity: int) -> Decimal:
    """What a quantity costs at a price, exactly (minor units, before rounding)."""
    if price.get("billing_scheme") != "tiered":
        transform = price.get("transform_quantity")
        if transform:  # packages: quantity / divide_by, rounded as the price says
            whole, rest = divmod(quantity, int(transform["divide_by"]))
            quantity = whole + (1 if rest and transform["round"] == "up" else 0)
        return Decimal(price["unit_amount_decimal"] or 0) * quantity
    tiers = price["tiers"]
    if price["tiers_mode"] == "volume":
        for tier in tiers:
            if tier["up_to"] is None or quantity <= tier["up_to"]:
                return Decimal(tier["unit_amount_decimal"]) * quantity + _flat(tier)
    total = Decimal(0)
    lower = 0
    for tier in tiers:  # graduated: each tier prices the units that fall inside it
        upper = quantity if tier["up_to"] is None else min(quantity, tier["up_to"])
        if upper > lower:
            total += Decimal(tier["unit_amount_decimal"]) * (upper - lower) + _flat(tier)
        lower = upper if tier["up_to"] is None else tier["up_to"]
        if quantity <= lower:
            break
    return total


def _flat(tier: dict[str, Any]) -> Decimal:
    return Decimal(str(tier.get("flat_amount_decimal") or tier.get("flat_amount") or 0))


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


Listing = Callable[[Request, list[dict[str, Any]], dict[str, Any], str], dict[str, Any]]


def billing_routes(
    store: LocalStripeStore,
    clock: Callable[[], int],
    route: Callable[..., list[Route]],
    listing: Listing,
) -> list[Route]:
    def queue(event_type: str, obj: dict[str, Any], created: int) -> None:
        store.put(
            {
                "id": new_id("evt"),
                "object": "event",
                "type": event_type,
                "created": created,
                "api_version": API_VERSION,
                "livemode": False,
                "pending_webhooks": 1,
                "data": {"object": json.loads(json.dumps(obj))},
                "delivered": False,
            }
        )

    async def create_endpoint(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, core_params.WebhookEndpointCreateParams)
        endpoint = {
            "id": new_id("we"),
            "object": "webhook_endpoint",
            "created": clock(),
            "enabled_events": list((params.get("enabled_events") or {}).values())
            if isinstance(params.get("enabled_events"), dict)
            else params.get("enabled_events") or ["*"],
            "livemode": False,
            "secret": f"whsec_{secrets.token_hex(16)}",
            "status": "enabled",
            "url": string_param(params, "url"),
        }
        store.put(endpoint)
        return endpoint

    async def list_invoices(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, core_params.InvoiceListParams)
        invoices = store.list("invoice")
        if "customer" in params:
            invoices = [i for i in invoices if i["customer"] == params["customer"]]
        return listing(request, invoices, params, "invoice")

    async def get_invoice(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        invoice = store.get("invoice", request.path_params["id"])
        if invoice is None:
            raise not_found("invoice", request.path_params["id"])
        return invoice

    async def list_invoice_lines(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, core_params.InvoiceLineItemListParams)
        invoice = store.get("invoice", request.path_params["id"])
        if invoice is None:
            raise not_found("invoice", request.path_params["id"])
        return listing(request, invoice["lines"]["data"], params, "line_item")

    def invoice_subscription(
        subscription: dict[str, Any], period_start: int, period_end: int
    ) -> dict[str, Any]:
        customer = store.get("customer", subscription["customer"]) or {}
        lines = []
        for item in subscription["items"]["data"]:
            price = store.get("price", item["price"]["id"]) or item["price"]
            recurring = price.get("recurring") or {}
            meter_id = recurring.get("meter")
            if meter_id:
                meter = store.get("billing.meter", meter_id)
                # Negative events correct usage; a period's usage below zero is billed as 0.
                quantity = (
                    max(
                        store.meter_event_sum(
                            meter["event_name"], subscription["customer"], period_start, period_end
                        ),
                        0,
                    )
                    if meter
                    else 0
                )
            else:
                quantity = int(item.get("quantity") or 1)
            exact = line_amount(price, quantity)
            lines.append(
                {
                    "id": new_id("il"),
                    "object": "line_item",
                    "amount": round_half_away_from_zero(exact),
                    "amount_exact_decimal": str(exact),
                    "currency": price["currency"],
                    "period": {"start": period_start, "end": period_end},
                    "price": price["id"],
                    "quantity": quantity,
                    "subscription_item": item["id"],
                    "metadata": {"meter": meter_id or ""},
                }
            )
        total = sum(line["amount"] for line in lines)
        return {
            "id": new_id("in"),
            "object": "invoice",
            "amount_due": total,
            "amount_paid": 0,
            "amount_remaining": total,
            "attempt_count": 0,
            "created": period_end,
            "currency": subscription["currency"],
            "customer": subscription["customer"],
            "lines": {
                "object": "list",
                "data": lines,
                "has_more": False,
                "total_count": len(lines),
            },
            "livemode": False,
            "metadata": {
                "meterbook_customer_id": (customer.get("metadata") or {}).get(
                    "meterbook_customer_id", subscription["customer"]
                )
            },
            "next_payment_attempt": None,
            "period_end": period_end,
            "period_start": period_start,
            "status": "draft",
            "status_transitions": {},
            "subscription": subscription["id"],
            "total": total,
        }

    def collect(invoice: dict[str, Any]) -> None:
        """Finalise, then pay or decline as the customer's metadata says; queue each step."""
        customer = store.get("customer", invoice["customer"]) or {}
        behaviour = (customer.get("metadata") or {}).get("local_payment", "succeeds")
        now = invoice["created"]
        queue("invoice.created", invoice, now)
        now += STEP_SECONDS
        invoice |= {"status": "open", "status_transitions": {"finalized_at": now}}
        queue("invoice.finalized", invoice, now)
        failures = (
            3
            if behaviour == "declines:forever"
            else (int(behaviour.split(":")[1]) if behaviour.startswith("declines:") else 0)
        )
        for attempt in range(1, failures + 1):
            now += STEP_SECONDS
            last = behaviour == "declines:forever" and attempt == failures
            invoice |= {
                "attempt_count": attempt,
                "next_payment_attempt": None if last else now + RETRY_SECONDS,
            }
            queue("invoice.payment_failed", invoice, now)
            now += RETRY_SECONDS if not last else 0
        now += STEP_SECONDS
        if behaviour == "declines:forever":
            invoice |= {
                "status": "uncollectible",
                "status_transitions": {
                    **invoice["status_transitions"],
                    "marked_uncollectible_at": now,
                },
            }
            queue("invoice.marked_uncollectible", invoice, now)
        else:
            invoice |= {
                "status": "paid",
                "amount_paid": invoice["total"],
                "amount_remaining": 0,
                "attempt_count": failures + 1,
                "next_payment_attempt": None,
                "status_transitions": {**invoice["status_transitions"], "paid_at": now},
            }
            queue("invoice.paid", invoice, now)
        store.put(invoice)

    async def bill(request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
            start, end = int(body["period_start"]), int(body["period_end"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse(
                {"error": 'POST {"period_start": <unix>, "period_end": <unix>}'},
                status_code=400,
            )
        invoices = []
        for subscription in store.list("subscription"):
            if subscription["status"] != "active":
                continue
            invoice = invoice_subscription(subscription, start, end)
            collect(invoice)
            invoices.append(invoice)
        return JSONResponse(
            {
                "invoices": [
                    {
                        "id": i["id"],
                        "customer": i["customer"],
                        "total": i["total"],
                        "status": i["status"],
                    }
                    for i in invoices
                ]
            }
        )

    async def flush(request: Request) -> Response:
        options = json.loads(await request.body() or b"{}")
        rng = random.Random(int(options.get("seed", 0)))
        duplicate = float(options.get("duplicate", 0.0))
        delay = float(options.get("delay_seconds", 0.0))
        pending = [e for e in store.list("event") if not e["delivered"]]
        pending.sort(key=lambda e: (e["created"], e["id"]))
        deliveries = [e for e in pending for _ in range(2 if rng.random() < duplicate else 1)]
        if options.get("shuffle"):
            rng.shuffle(deliveries)
        statuses: dict[str, int] = {}
        for endpoint in store.list("webhook_endpoint"):
            for event in deliveries:
                wanted = endpoint["enabled_events"]
                if "*" not in wanted and event["type"] not in wanted:
                    continue
                body = {k: v for k, v in event.items() if k != "delivered"}
                payload = json.dumps(body).encode()
                if delay:
                    time.sleep(delay)  # a slow network between Stripe and the receiver
                signature = sign(payload, endpoint["secret"], _wall_clock())
                status = _post(endpoint["url"], payload, signature)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
        for event in pending:
            store.put(event | {"delivered": True})
        return JSONResponse({"events": len(pending), "deliveries": statuses})

    return [
        *route("/v1/webhook_endpoints", post=create_endpoint),
        *route("/v1/invoices", get=list_invoices),
        *route("/v1/invoices/{id}", get=get_invoice),
        *route("/v1/invoices/{id}/lines", get=list_invoice_lines),
        Route("/_local/bill", bill, methods=["POST"]),
        Route("/_local/webhooks/flush", flush, methods=["POST"]),
    ]


def _wall_clock() -> int:
    """Signatures carry real time: receivers check them against their own clock."""
    return int(time.time())


def _post(url: str, payload: bytes, signature: str) -> int:
    request = urllib.request.Request(
        url,
        data=payload,
        headers={"Content-Type": "application/json", "Stripe-Signature": signature},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0

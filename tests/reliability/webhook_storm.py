"""A storm of Stripe webhooks for the reliability harness, delivered to the real receiver.

The invoice events are real output of the local Stripe: customers with payment behaviours
(``local_payment``), subscriptions with metered, tiered and flat prices, meter events, then
``/_local/bill`` for several periods and ``/_local/webhooks/flush`` into a capturing endpoint.
Around them come the events the local Stripe does not produce but the receiver handles, built
the way Stripe sends them: subscription changes and cancellations, invoices paid after being
written off, authentication requests, voided invoices, refunds, disputes, meter error reports,
and ``invoice.payment_succeeded`` (stored, not acted on). Refunds come as current API versions
send them: a ``charge.refunded`` that no longer lists the charge's refunds (API 2022-11-15 and
later) and each refund's own ``refund.created`` (some refunds then fail: ``refund.failed``).
Everything is drawn from one seed; only the local Stripe's object ids are random,
and neither the order nor the choices depend on them.

Three deliveries of the same storm, each into a fresh database behind its own receiver (uvicorn
on 127.0.0.1), signed as Stripe signs at the moment of sending:

- ``in_order``: each event once, in the order Stripe created them;
- ``shuffled_with_replays``: each event 1-3 times, all deliveries shuffled;
- ``with_bad_deliveries``: shuffled, each event once, interleaved with deliveries that must
  be refused with a 400 and change nothing: a wrong secret, a stale timestamp (a replayed
  capture), a body altered after signing, no signature, a malformed signature header, and forged
  events that exist nowhere else.

``final_state`` reads what the webhooks left behind (ledger, dunning, subscriptions, disputes,
stored events) in a form two runs can be compared by.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import math
import os
import random
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import psycopg
import stripe
import uvicorn

from ledger import Ledger
from stripe_local.billing import STEP_SECONDS
from stripe_local.server import LocalStripeServer, free_port
from stripe_sync.invoice_events import LIFE_ORDER
from stripe_sync.meter_events import ensure_meters
from stripe_sync.webhooks import SIGNATURE_TOLERANCE_SECONDS, create_webhook_app

SCALE_VARIABLE = "METERBOOK_RELIABILITY_SCALE"
EVENTS_BY_SCALE = {"reduced": 500, "full": 10_000}
SEED = 20_261_101
SECRET = "whsec_reliability_storm"
WRONG_SECRET = "whsec_not_the_receivers"

DAY = 86_400
PERIOD_SECONDS = 30 * DAY
PERIODS = 6
START = 1_767_225_600  # 2026-01-01T00:00:00Z, the first billing period's start
# Events per customer and period, on average, with the payment behaviours below and the
# events built around them (sized generously: the storm is cut to the exact count).
EVENTS_PER_CUSTOMER_PERIOD = 5.0
PAYMENT_BEHAVIOURS = {
    "succeeds": 55,
    "declines:1": 15,
    "declines:2": 10,
    "declines:forever": 20,
}
SHARE_PAID_AFTER_WRITE_OFF = 0.3
SHARE_REFUNDED = 0.2
SHARE_REFUND_FAILED = 0.1
SHARE_DISPUTED = 0.05
SHARE_PLAN_CHANGED = 0.5
SHARE_CANCELED = 0.15
SHARE_ACTION_REQUIRED = 0.25  # failed attempts that needed the customer's authentication
SHARE_VOIDED = 0.06  # invoices followed by one issued by mistake, then voided
SHARE_VOIDED_AFTER_WRITE_OFF = 0.2  # of those written off and not paid after all
EVENTS_PER_METER_ERROR_REPORT = 250
BAD_DELIVERIES_PER_EVENT = 0.5
BAD_KINDS = (
    "wrong_secret",
    "stale_timestamp",
    "altered_body",
    "no_signature",
    "malformed_signature",
    "forged_event",
)
HTTP_TIMEOUT_SECONDS = 60


def storm_scale() -> str:
    """``reduced`` (CI) or ``full``, from ``METERBOOK_RELIABILITY_SCALE``."""
    scale = os.environ.get(SCALE_VARIABLE, "reduced").strip() or "reduced"
    if scale not in EVENTS_BY_SCALE:
        raise ValueError(
            f"{SCALE_VARIABLE}={scale!r}: expected one of {', '.join(EVENTS_BY_SCALE)}"
        )
    return scale


@dataclass(frozen=True)
class Storm:
    """Genuine events in the order Stripe created them."""

    events: list[dict[str, Any]]
    seed: int

    @property
    def event_ids(self) -> set[str]:
        return {event["id"] for event in self.events}

    def types(self) -> Counter[str]:
        return Counter(event["type"] for event in self.events)

    def invoice_ids(self) -> list[str]:
        return sorted(
            {e["data"]["object"]["id"] for e in self.events if e["type"].startswith("invoice.")}
        )

    def expected_transactions(self) -> Counter[str]:
        """Ledger transactions per kind the events call for, counted straight from the events
        (not by the receiver's code): one finalisation per finalised invoice with a total, one
        payment per paid invoice, one write-off per written-off invoice with an open amount and
        its reversal if paid after all, one refund per Stripe refund id."""
        finalised: set[str] = set()
        paid: set[str] = set()
        written_off: set[str] = set()
        voided: set[str] = set()
        refunds: set[str] = set()
        failed_refunds: set[str] = set()
        for event in self.events:
            obj = event["data"]["object"]
            if event["type"].startswith("invoice.") and obj["total"] > 0:
                if (obj.get("status_transitions") or {}).get("finalized_at"):
                    finalised.add(obj["id"])
                if event["type"] == "invoice.paid" and obj["amount_paid"] > 0:
                    paid.add(obj["id"])
                if event["type"] == "invoice.marked_uncollectible" and obj["amount_remaining"]:
                    written_off.add(obj["id"])
                if event["type"] == "invoice.voided":
                    voided.add(obj["id"])
            elif event["type"].startswith("refund.") and obj["amount"] > 0:
                refunds.add(obj["id"])
                if obj["status"] in ("failed", "canceled"):
                    failed_refunds.add(obj["id"])
        return Counter(
            {
                "invoice_finalised": len(finalised),
                "payment": len(paid),
                "write_off": len(written_off),
                "write_off_recovered": len(written_off & paid),
                "invoice_voided": len(voided & finalised),
                "write_off_voided": len((voided & written_off) - paid),
                "refund": len(refunds),
                "refund_failed": len(failed_refunds),
            }
        )


# Generating the storm ----------------------------------------------------------------------


def generate_storm(*, events: int, seed: int = SEED) -> Storm:
    """``events`` genuine events: the local Stripe's invoices for enough customers over
    ``PERIODS`` periods, the events around them, cut to the first ``events`` by creation."""
    customers = max(2, math.ceil(events / (PERIODS * EVENTS_PER_CUSTOMER_PERIOD)))
    while True:
        everything = _all_events(customers, random.Random(seed))
        if len(everything) >= events:
            return Storm(events=everything[:events], seed=seed)
        customers = math.ceil(customers * 1.1)  # too few: a few more customers, same seed


def _all_events(customers: int, rng: random.Random) -> list[dict[str, Any]]:
    behaviours = rng.choices(
        list(PAYMENT_BEHAVIOURS), weights=list(PAYMENT_BEHAVIOURS.values()), k=customers
    )
    invoice_events, subscriptions = _bill_on_local_stripe(behaviours, rng)
    built = _Builder(rng)
    for subscription in subscriptions:
        built.subscription_life(subscription)
    for story in _stories(invoice_events):
        built.around_invoice(story)
    storm = [(event, rank) for rank, event in enumerate(invoice_events)]
    storm += [(event, len(invoice_events) + rank) for rank, event in enumerate(built.events)]
    everything = [event for event, _ in sorted(storm, key=lambda pair: _creation_order(*pair))]
    for number in range(len(everything) // EVENTS_PER_METER_ERROR_REPORT):
        at = everything[(number + 1) * EVENTS_PER_METER_ERROR_REPORT - 1]["created"]
        everything.append(built.meter_error_report(at))
    everything.sort(key=lambda event: event["created"])  # stable: creation order within a second
    return everything


def _creation_order(event: dict[str, Any], rank: int) -> tuple[int, int, int]:
    return (event["created"], LIFE_ORDER.get(event["type"], len(LIFE_ORDER)), rank)


def _bill_on_local_stripe(
    behaviours: list[str], rng: random.Random
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Bill every customer for ``PERIODS`` periods on the local Stripe; returns the invoice
    events it sends (as captured from its webhook delivery) and the subscriptions."""
    now = [START]
    with LocalStripeServer(clock=lambda: now[0]) as server, _capturing() as capture:
        client = stripe.StripeClient(
            "sk_test_reliability",
            base_addresses={"api": server.url, "meter_events": server.url},
            max_network_retries=0,
        )
        meters = ensure_meters(client, [("requests", "Requests"), ("tokens", "Tokens")])
        prices = _prices(client, meters)
        subscriptions = []
        for number, behaviour in enumerate(behaviours):
            customer = client.v1.customers.create(
                params={
                    "email": f"storm{number}@example.com",
                    "metadata": {
                        "meterbook_customer_id": f"storm_{number:05d}",
                        "local_payment": behaviour,
                    },
                }
            )
            subscription = client.v1.subscriptions.create(
                params={
                    "customer": customer.id,
                    "items": [{"price": price} for price in prices],
                    "backdate_start_date": START,
                    "metadata": {"plan_id": "starter"},
                }
            )
            subscriptions.append(json.loads(subscription.last_response.body))  # as sent
        for period in range(PERIODS):
            start = START + period * PERIOD_SECONDS
            now[0] = start + 20 * DAY  # meter events must lie in the clock's past 35 days
            for subscription in subscriptions:
                for event_name, most in (("requests", 400), ("tokens", 30_000)):
                    value = rng.randrange(most)
                    if value:
                        client.v1.billing.meter_events.create(
                            params={
                                "event_name": event_name,
                                "timestamp": start + rng.randrange(19 * DAY),
                                "payload": {
                                    "stripe_customer_id": subscription["customer"],
                                    "value": str(value),
                                },
                            }
                        )
            _post_json(
                f"{server.url}/_local/bill",
                {"period_start": start, "period_end": start + PERIOD_SECONDS},
            )
        client.v1.webhook_endpoints.create(params={"url": capture.url, "enabled_events": ["*"]})
        report = _post_json(f"{server.url}/_local/webhooks/flush", {})
    if report["deliveries"] != {"200": len(capture.bodies)}:
        raise AssertionError(f"capturing the local Stripe's events failed: {report}")
    # The local Stripe's ids are random: order by what is not (all of a period's invoices are
    # created in the same second), so that the storm and its shuffles follow from the seed.
    invoice_events = sorted(
        (json.loads(body) for body in capture.bodies),
        key=lambda e: (
            e["created"],
            LIFE_ORDER[e["type"]],
            e["data"]["object"]["metadata"]["meterbook_customer_id"],
        ),
    )
    return invoice_events, subscriptions


def _prices(client: stripe.StripeClient, meters: dict[str, str]) -> list[str]:
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
                {"up_to": 10_000, "unit_amount_decimal": "0.05"},
                {"up_to": "inf", "unit_amount_decimal": "0.025", "flat_amount": 100},
            ],
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meters["tokens"]},
        }
    )
    platform_fee = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount": 1_900,
            "recurring": {"interval": "month"},
        }
    )
    return [per_request.id, tokens.id, platform_fee.id]


def _stories(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The events of each invoice, in the order they were created."""
    by_invoice: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_invoice.setdefault(event["data"]["object"]["id"], []).append(event)
    return [sorted(story, key=lambda e: _creation_order(e, 0)) for story in by_invoice.values()]


class _Builder:
    """Events the local Stripe does not send, shaped as Stripe sends them; ids from the seed."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.events: list[dict[str, Any]] = []

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{self.rng.getrandbits(96):024x}"

    def event(self, event_type: str, created: int, obj: dict[str, Any]) -> dict[str, Any]:
        event = {
            "id": self.new_id("evt"),
            "object": "event",
            "type": event_type,
            "created": created,
            "api_version": "2025-09-30.clover",
            "livemode": False,
            "pending_webhooks": 1,
            "data": {"object": json.loads(json.dumps(obj))},
        }
        self.events.append(event)
        return event

    def subscription_life(self, subscription: dict[str, Any]) -> None:
        """Created; maybe a plan change and a spell past due; maybe canceled at the end (the
        update and the deletion in the same second, as Stripe sends a cancellation)."""
        sub = dict(subscription) | {"status": "active", "metadata": {"plan_id": "starter"}}
        self.event("customer.subscription.created", START, sub)
        if self.rng.random() < SHARE_PLAN_CHANGED:
            changed_at = START + self.rng.randrange(1, (PERIODS - 1) * PERIOD_SECONDS - 5 * DAY)
            sub |= {"metadata": {"plan_id": self.rng.choice(["pro", "team"])}}
            self.event("customer.subscription.updated", changed_at, sub)
            if self.rng.random() < 0.5:
                self.event(
                    "customer.subscription.updated", changed_at + DAY, sub | {"status": "past_due"}
                )
                self.event("customer.subscription.updated", changed_at + 4 * DAY, sub)
        if self.rng.random() < SHARE_CANCELED:  # in the last period, which is still invoiced
            ended = START + (PERIODS - 1) * PERIOD_SECONDS + self.rng.randrange(DAY, 20 * DAY)
            sub |= {"status": "canceled", "canceled_at": ended, "ended_at": ended}
            self.event("customer.subscription.updated", ended, sub)
            self.event("customer.subscription.deleted", ended, sub)

    def around_invoice(self, story: list[dict[str, Any]]) -> None:
        for event in story:
            if (
                event["type"] == "invoice.payment_failed"
                and self.rng.random() < SHARE_ACTION_REQUIRED
            ):  # a decline for authentication: Stripe tells the customer's action is needed
                self.event(
                    "invoice.payment_action_required",
                    event["created"] + 1,
                    event["data"]["object"],
                )
        last = story[-1]
        invoice = last["data"]["object"]
        if self.rng.random() < SHARE_VOIDED:
            self.voided_invoice(invoice, story[0]["created"] + 2 * DAY)
        if last["type"] == "invoice.paid":
            self.event("invoice.payment_succeeded", last["created"], invoice)
            self.charge_after_payment(invoice, last["created"])
        elif (
            last["type"] == "invoice.marked_uncollectible"
            and self.rng.random() < SHARE_PAID_AFTER_WRITE_OFF
        ):
            paid_at = last["created"] + self.rng.randrange(1, 20) * DAY
            transitions = invoice["status_transitions"] | {"paid_at": paid_at}
            paid = invoice | {
                "status": "paid",
                "paid_out_of_band": True,
                "amount_paid": invoice["total"],
                "amount_remaining": 0,
                "status_transitions": transitions,
            }
            self.event("invoice.paid", paid_at, paid)
        elif (
            last["type"] == "invoice.marked_uncollectible"
            and self.rng.random() < SHARE_VOIDED_AFTER_WRITE_OFF
        ):  # Stripe voids uncollectible invoices too
            voided_at = last["created"] + self.rng.randrange(1, 20) * DAY
            transitions = invoice["status_transitions"] | {"voided_at": voided_at}
            void = invoice | {"status": "void", "amount_remaining": 0}
            self.event("invoice.voided", voided_at, void | {"status_transitions": transitions})

    def voided_invoice(self, like: dict[str, Any], created: int) -> None:
        """An invoice issued by mistake: created, finalised, voided a day later."""
        total = self.rng.randint(100, 5_000)
        invoice = like | {
            "id": self.new_id("in"),
            "amount_due": total,
            "amount_paid": 0,
            "amount_remaining": total,
            "attempt_count": 0,
            "next_payment_attempt": None,
            "status": "draft",
            "status_transitions": {},
            "total": total,
        }
        invoice.pop("lines", None)
        self.event("invoice.created", created, invoice)
        finalized_at = created + STEP_SECONDS
        invoice |= {"status": "open", "status_transitions": {"finalized_at": finalized_at}}
        self.event("invoice.finalized", finalized_at, invoice)
        voided_at = finalized_at + DAY
        transitions = invoice["status_transitions"] | {"voided_at": voided_at}
        self.event(
            "invoice.voided",
            voided_at,
            invoice | {"status": "void", "amount_remaining": 0, "status_transitions": transitions},
        )

    def charge_after_payment(self, invoice: dict[str, Any], paid_at: int) -> None:
        """Partial refunds (a ``charge.refunded`` and the refund's own ``refund.created``; some
        refunds fail) or a dispute."""
        charge = {
            "id": self.new_id("ch"),
            "object": "charge",
            "amount": invoice["total"],
            "currency": invoice["currency"],
            "customer": invoice["customer"],
            "invoice": invoice["id"],
            "metadata": dict(invoice["metadata"]),
            "paid": True,
            "refunded": False,
            "amount_refunded": 0,
        }
        draw = self.rng.random()
        if draw < SHARE_REFUNDED and invoice["total"] >= 2:
            at = paid_at
            left = invoice["total"]
            for _ in range(self.rng.randint(1, 2)):
                at += self.rng.randrange(1, 10) * DAY
                amount = self.rng.randint(1, left // 2)
                left -= amount
                refund = {
                    "id": self.new_id("re"),
                    "object": "refund",
                    "amount": amount,
                    "charge": charge["id"],
                    "created": at,
                    "currency": charge["currency"],
                    "status": "succeeded",
                }
                charge["amount_refunded"] += amount
                self.event("charge.refunded", at, charge)
                self.event("refund.created", at, refund)
                if self.rng.random() < SHARE_REFUND_FAILED:  # e.g. the card was closed
                    charge["amount_refunded"] -= amount
                    left += amount
                    failed_at = at + self.rng.randrange(1, 5) * DAY
                    self.event("refund.failed", failed_at, refund | {"status": "failed"})
        elif draw < SHARE_REFUNDED + SHARE_DISPUTED:
            at = paid_at + self.rng.randrange(1, 30) * DAY
            dispute = {
                "id": self.new_id("dp"),
                "object": "dispute",
                "amount": invoice["total"],
                "charge": charge["id"],
                "currency": charge["currency"],
                "created": at,
                "reason": self.rng.choice(["fraudulent", "product_not_received", "duplicate"]),
                "status": "needs_response",
            }
            self.event("charge.dispute.created", at, dispute)

    def meter_error_report(self, at: int) -> dict[str, Any]:
        report = {
            "id": self.new_id("mer"),
            "object": "billing.meter_error_report",
            "summary_code": "meter_event_customer_not_found",
        }
        return self.event("billing.meter.error_report_triggered", at, report)


class _Capture:
    def __init__(self, url: str) -> None:
        self.url = url
        self.bodies: list[bytes] = []


@contextmanager
def _capturing() -> Iterator[_Capture]:
    """An endpoint on 127.0.0.1 that keeps every body posted to it and answers 200."""
    port = free_port()
    capture = _Capture(f"http://127.0.0.1:{port}/capture")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                capture.bodies.append(body)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield capture
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS * 10) as response:
        return json.loads(response.read())


# Delivery plans ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One POST to the receiver: a genuine event (``kind`` ``genuine``) or a bad one."""

    kind: str
    event: dict[str, Any]

    @property
    def bad(self) -> bool:
        return self.kind != "genuine"


def in_order(storm: Storm) -> list[Delivery]:
    return [Delivery("genuine", event) for event in storm.events]


def shuffled_with_replays(storm: Storm, *, seed: int, most_copies: int = 3) -> list[Delivery]:
    """Each event 1 to ``most_copies`` times, every delivery in a random place."""
    rng = random.Random(seed)
    plan = [
        Delivery("genuine", event)
        for event in storm.events
        for _ in range(rng.randint(1, most_copies))
    ]
    rng.shuffle(plan)
    return plan


def with_bad_deliveries(storm: Storm, *, seed: int) -> list[Delivery]:
    """Each event once, shuffled, and ``BAD_DELIVERIES_PER_EVENT`` bad deliveries per event in
    random places: of genuine events (before or after their genuine delivery) and of forged
    ones."""
    rng = random.Random(seed)
    plan = shuffled_with_replays(storm, seed=seed, most_copies=1)
    bad_count = round(len(storm.events) * BAD_DELIVERIES_PER_EVENT)
    for number in range(bad_count):
        kind = BAD_KINDS[number % len(BAD_KINDS)]
        event = rng.choice(storm.events)
        if kind == "forged_event":
            event = _forged(event, rng)
        plan.insert(rng.randrange(len(plan) + 1), Delivery(kind, event))
    return plan


def _forged(genuine: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """An event Stripe never sent: a new id, and for an invoice, paid in full."""
    forged = json.loads(json.dumps(genuine))
    forged["id"] = f"evt_forged_{rng.getrandbits(64):016x}"
    obj = forged["data"]["object"]
    if genuine["type"].startswith("invoice."):
        forged["type"] = "invoice.paid"
        obj |= {"status": "paid", "amount_paid": obj["total"] * 10, "amount_remaining": 0}
    return forged


# Sending -----------------------------------------------------------------------------------


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    """A ``Stripe-Signature`` header as Stripe computes it."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def request_of(delivery: Delivery, rng: random.Random) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a delivery, signed now (bad ones broken as their kind says)."""
    body = json.dumps(delivery.event, separators=(",", ":")).encode()
    now = int(time.time())
    headers = {"Content-Type": "application/json"}
    if delivery.kind == "genuine":
        headers["Stripe-Signature"] = sign(body, SECRET, now)
    elif delivery.kind in ("wrong_secret", "forged_event"):
        headers["Stripe-Signature"] = sign(body, WRONG_SECRET, now)
    elif delivery.kind == "stale_timestamp":  # a delivery captured then and replayed now
        age = rng.randint(SIGNATURE_TOLERANCE_SECONDS + 60, 3 * DAY)
        headers["Stripe-Signature"] = sign(body, SECRET, now - age)
    elif delivery.kind == "altered_body":  # signed, then changed on the way
        headers["Stripe-Signature"] = sign(body, SECRET, now)
        altered = json.loads(body)
        altered["created"] += 1
        altered["data"]["object"]["amount_paid"] = 10**9
        body = json.dumps(altered, separators=(",", ":")).encode()
    elif delivery.kind == "malformed_signature":
        headers["Stripe-Signature"] = rng.choice(
            [f"t={now}", f"t=yesterday,v1={'0' * 64}", f"v1={sign(body, SECRET, now)[-64:]}"]
        )
    elif delivery.kind != "no_signature":
        raise ValueError(f"unknown delivery kind {delivery.kind!r}")
    return body, headers


@dataclass
class RunResult:
    """What one delivery plan met: statuses per delivery kind, and the receiver's answers."""

    deliveries: int = 0
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    not_processed: list[str] = field(default_factory=list)  # answered processed: false
    seconds: float = 0.0

    def count(self, kind: str | None = None) -> int:
        kinds = [kind] if kind else list(self.statuses)
        return sum(sum(self.statuses.get(k, Counter()).values()) for k in kinds)


def deliver_all(url: str, plan: list[Delivery], *, seed: int) -> RunResult:
    """POST every delivery in turn over one keep-alive connection; records each status."""
    rng = random.Random(seed)
    parts = urlsplit(url)
    result = RunResult(deliveries=len(plan))
    started = time.perf_counter()
    connection = http.client.HTTPConnection(
        parts.hostname, parts.port, timeout=HTTP_TIMEOUT_SECONDS
    )
    try:
        for delivery in plan:
            body, headers = request_of(delivery, rng)
            status, answer = _post(connection, parts.path, body, headers)
            result.statuses.setdefault(delivery.kind, Counter())[status] += 1
            if status == 200 and not json.loads(answer).get("processed"):
                result.not_processed.append(delivery.event["id"])
    finally:
        connection.close()
    result.seconds = time.perf_counter() - started
    return result


def _post(
    connection: http.client.HTTPConnection, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes]:
    for attempt in (1, 2):  # a keep-alive connection the server closed is opened again once
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            connection.close()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@contextmanager
def receiving(ledger_url: str) -> Iterator[str]:
    """The real receiver (``create_webhook_app``) under uvicorn on 127.0.0.1; yields its URL."""
    Ledger.connect(ledger_url).close()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_webhook_app(ledger_url, SECRET),
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
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the webhook receiver did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/stripe/webhooks"
    finally:
        server.should_exit = True
        thread.join(10)


def without_waiting_for_the_disk(url: str) -> str:
    """Commits in this database return before their WAL reaches the disk (about twice as fast
    here). What the receiver commits, and in which order, is unchanged; only a crash of the
    server could lose the last commits, and crashes are not what this harness injects."""
    with psycopg.connect(url, autocommit=True) as conn:
        name = conn.execute("select current_database()").fetchone()
        assert name is not None
        conn.execute(f'alter database "{name[0]}" set synchronous_commit = off')
    return url


def run_plan(ledger_url: str, plan: list[Delivery], *, seed: int) -> RunResult:
    with receiving(ledger_url) as url:
        return deliver_all(url, plan, seed=seed)


# The state the webhooks leave ---------------------------------------------------------------


def final_state(ledger_url: str, invoice_ids: list[str]) -> dict[str, Any]:
    """Everything webhooks write, comparable between runs: the ledger (content hash, balances,
    transactions per kind), the dunning steps and each invoice's dunning state, subscriptions,
    disputes, and the stored events (without delivery counts and arrival times)."""
    with Ledger.connect(ledger_url) as book:
        report = book.verify(recompute_hashes=True)
        dunning_state = {}
        for invoice_id in invoice_ids:
            step = book.dunning_state(invoice_id)
            dunning_state[invoice_id] = (step.state, step.event_key) if step else None
        balances = book.balances()
    with psycopg.connect(ledger_url) as conn:

        def rows(sql: str) -> list[tuple[Any, ...]]:
            return conn.execute(sql).fetchall()

        return {
            "ledger_ok": report.problems(),
            "ledger_hash": report.content_hash,
            "transactions": report.transactions,
            "entries": report.entries,
            "transactions_by_kind": dict(
                rows("select kind, count(*) from ledger.transactions group by kind order by kind")
            ),
            "balances": balances,
            "dunning_events": rows(
                "select event_key, invoice_id, customer_id, state, attempt, occurred_at, "
                "detail::text from ledger.dunning_events order by event_key"
            ),
            "dunning_state": dunning_state,
            "subscriptions": rows("select * from stripe_sync.subscriptions order by 1"),
            "disputes": rows("select * from stripe_sync.disputes order by 1"),
            "stored_events": rows(
                "select event_id, event_type, object_id, created, md5(payload::text), "
                "processed_at is not null, processing_error "
                "from stripe_sync.webhook_events order by event_id"
            ),
        }


def stored_deliveries(ledger_url: str) -> dict[str, int]:
    """How many deliveries the receiver counted per stored event id."""
    with psycopg.connect(ledger_url) as conn:
        return dict(conn.execute("select event_id, deliveries from stripe_sync.webhook_events"))


def genuine_copies(plan: list[Delivery]) -> dict[str, int]:
    return dict(Counter(d.event["id"] for d in plan if not d.bad))


def differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """The parts of two final states that differ, named (a whole-dict diff is unreadable)."""
    found = []
    for part in expected:
        if expected[part] != actual.get(part):
            if isinstance(expected[part], dict):
                keys = sorted(
                    k
                    for k in set(expected[part]) | set(actual.get(part) or {})
                    if expected[part].get(k) != (actual.get(part) or {}).get(k)
                )
                found.append(f"{part}: {len(keys)} differ, e.g. {keys[:3]}")
            elif isinstance(expected[part], list):
                left, right = set(expected[part]), set(actual.get(part) or [])
                found.append(
                    f"{part}: only in-order {sorted(left - right)[:3]}, "
                    f"only here {sorted(right - left)[:3]}"
                )
            else:
                found.append(f"{part}: {expected[part]!r} != {actual.get(part)!r}")
    return found


# Checks (the test and the benchmark share them) ----------------------------------------------


def in_order_problems(
    storm: Storm, result: RunResult, state: dict[str, Any], deliveries: dict[str, int]
) -> list[str]:
    """What is wrong with the in-order run: any refusal or processing failure, a ledger
    invariant broken, transactions other than the events call for, an event stored or counted
    other than once."""
    problems = []
    if dict(result.statuses) != {"genuine": Counter({200: len(storm.events)})}:
        problems.append(f"statuses {dict(result.statuses)}")
    if result.not_processed:
        problems.append(f"not processed: {result.not_processed[:3]}")
    problems += [f"ledger: {problem}" for problem in state["ledger_ok"]]
    expected = storm.expected_transactions()
    expected["reversal"] = sum(  # their kind in the ledger
        expected.pop(kind)
        for kind in ("write_off_recovered", "invoice_voided", "write_off_voided", "refund_failed")
    )
    expected = Counter({kind: count for kind, count in sorted(expected.items()) if count})
    if state["transactions_by_kind"] != dict(expected):
        problems.append(f"transactions {state['transactions_by_kind']} != {dict(expected)}")
    if deliveries != dict.fromkeys(storm.event_ids, 1):
        problems.append("stored events are not the storm's, each delivered once")
    failed = [row[0] for row in state["stored_events"] if not row[5] or row[6] is not None]
    if failed:
        problems.append(f"events not processed or failed: {failed[:3]}")
    return problems


def replay_problems(
    baseline: dict[str, Any],
    plan: list[Delivery],
    result: RunResult,
    state: dict[str, Any],
    deliveries: dict[str, int],
) -> list[str]:
    """What is wrong with a run against the in-order ``baseline``: a genuine delivery not
    answered 200 and processed, a bad one not refused with 400, any difference in the final
    state, an event stored twice, a forged one stored, a refused delivery counted."""
    problems = []
    wanted = Counter(d.kind for d in plan)
    for kind, count in sorted(wanted.items()):
        status = 200 if kind == "genuine" else 400
        if result.statuses.get(kind) != Counter({status: count}):
            problems.append(f"{kind}: {dict(result.statuses.get(kind) or {})}, not {status}")
    if result.not_processed:
        problems.append(f"not processed: {result.not_processed[:3]}")
    problems += differences(baseline, state)
    if deliveries != genuine_copies(plan):
        extra = sorted(set(deliveries) - set(genuine_copies(plan)))
        problems.append(f"stored deliveries differ from the genuine ones sent (extra: {extra[:3]})")
    return problems

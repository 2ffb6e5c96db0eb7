"""The Stripe webhook receiver: verify, store exactly once, then process idempotently.

``POST /stripe/webhooks`` checks the ``Stripe-Signature`` header with
``stripe.Webhook.construct_event`` (a bad or stale signature is a 400 and nothing is stored),
stores the event by its id (a redelivery stores nothing new), and answers 2xx only once the event
is committed. Processing follows in the same request and is idempotent and order-independent:
it recomputes the affected object's state from all its stored events (``invoice_events``;
refunds by their Stripe ids, from ``refund.*`` events or a charge that lists them; disputes
recorded in ``stripe_sync.disputes``; meter error reports logged for the outbox's owner). If
processing fails, the event stays stored with the error, Stripe still gets its 2xx, and
``process_stored_events`` (``meterbook stripe webhooks --reprocess``) runs it again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import stripe
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from crash_points import crash_point
from ledger import Ledger, Transaction
from ledger.postings import refund as refund_posting
from stripe_sync.catalog import subscription_period
from stripe_sync.invoice_events import INVOICE_EVENT_TYPES, InvoiceEvent, invoice_effects

SIGNATURE_TOLERANCE_SECONDS = 300  # Stripe's own default: older signatures are replays
CHARGE_EVENT_TYPES = ("charge.refunded", "charge.dispute.created")
# A refund's own events (API 2024+). Since API version 2022-11-15 a charge no longer lists its
# refunds unless expanded, so these carry the refunds; an older ``charge.refunded`` that does
# list them posts the same transactions under the same keys.
REFUND_EVENT_TYPES = ("refund.created", "refund.updated", "refund.failed")
REFUND_UNDONE_STATUSES = ("failed", "canceled")  # the money came back to Stripe's balance
METER_ERROR_EVENT_TYPE = "billing.meter.error_report_triggered"
SUBSCRIPTION_EVENT_TYPES = (
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
)

SCHEMA_SQL = """
create schema if not exists stripe_sync;
create table if not exists stripe_sync.webhook_events (
    event_id text primary key,
    event_type text not null,
    object_id text,
    created bigint not null,
    payload jsonb not null,
    received_at timestamptz not null default now(),
    deliveries integer not null default 1,
    processed_at timestamptz,
    processing_error text
);
create index if not exists webhook_events_object on stripe_sync.webhook_events (object_id);
create table if not exists stripe_sync.disputes (
    dispute_id text primary key,
    charge_id text not null,
    amount bigint not null,
    currency text not null,
    reason text,
    status text not null,
    created bigint not null
);
create table if not exists stripe_sync.subscriptions (
    subscription_id text primary key,
    customer_id text not null,
    status text not null,
    plan_id text,
    current_period_start bigint,
    current_period_end bigint,
    as_of_event text not null,
    as_of_created bigint not null
);
"""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredEvent:
    event_id: str
    event_type: str
    created: int
    payload: dict[str, Any]


def ensure_schema(conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('stripe_sync.webhooks'))")
        conn.execute(SCHEMA_SQL)


def store_event(conn: psycopg.Connection, event: dict[str, Any]) -> bool:
    """Store a verified event; True if it is new (a redelivery only counts the delivery)."""
    data_object = event.get("data", {}).get("object", {})
    with conn.transaction():
        inserted = conn.execute(
            """
            insert into stripe_sync.webhook_events (event_id, event_type, object_id, created,
                payload)
            values (%s, %s, %s, %s, %s)
            on conflict (event_id) do update
                set deliveries = stripe_sync.webhook_events.deliveries + 1
            returning deliveries = 1
            """,
            [
                event["id"],
                event["type"],
                data_object.get("id"),
                int(event["created"]),
                json.dumps(event),
            ],
        ).fetchone()
    return bool(inserted and inserted[0])


def _events_of(conn: psycopg.Connection, object_id: str) -> list[StoredEvent]:
    rows = conn.execute(
        "select event_id, event_type, created, payload from stripe_sync.webhook_events "
        "where object_id = %s",
        [object_id],
    ).fetchall()
    return [StoredEvent(r[0], r[1], int(r[2]), r[3]) for r in rows]


def process_object(conn: psycopg.Connection, book: Ledger, object_id: str) -> None:
    """Bring the ledger, dunning and subscription state in line with all of one object's
    stored events. Safe to run any number of times, in any order of arrival."""
    events = _events_of(conn, object_id)
    invoice_events = [
        InvoiceEvent(e.event_id, e.event_type, e.created, e.payload["data"]["object"])
        for e in events
        if e.event_type in INVOICE_EVENT_TYPES
    ]
    if invoice_events:
        effects = invoice_effects(invoice_events)
        book.post_many(effects.transactions)
        crash_point("webhooks.mid_process")
        for step in effects.dunning_events:
            book.record_dunning_event(step)
    subscription_events = [e for e in events if e.event_type in SUBSCRIPTION_EVENT_TYPES]
    if subscription_events:
        _apply_subscription(conn, subscription_events)
    refund_events = [e for e in events if e.event_type in ("charge.refunded", *REFUND_EVENT_TYPES)]
    if refund_events:
        book.post_many(_refunds(refund_events))
    for event in events:
        if event.event_type == "charge.dispute.created":
            _record_dispute(conn, event)
        elif event.event_type == METER_ERROR_EVENT_TYPE:
            log.warning(
                "Stripe reported meter events it refused (%s); see the stored event and the "
                "meter's error reports",
                event.event_id,
            )
    crash_point("webhooks.before_mark_processed")
    with conn.transaction():
        conn.execute(
            "update stripe_sync.webhook_events set processed_at = now(), processing_error = null "
            "where object_id = %s",
            [object_id],
        )


def _refunds_seen(event: StoredEvent) -> list[dict[str, Any]]:
    """The refunds one event shows: its own object for ``refund.*``, or the refunds a
    ``charge.refunded`` lists (only when the charge was sent with them expanded)."""
    obj = event.payload["data"]["object"]
    if event.event_type in REFUND_EVENT_TYPES:
        return [obj]
    listed = (obj.get("refunds") or {}).get("data") or []
    return [{"charge": obj["id"], "currency": obj["currency"]} | refund for refund in listed]


def _refunds(events: list[StoredEvent]) -> list[Transaction]:
    """One refund transaction per Stripe refund (keyed by the refund's id) and, if the refund
    failed or was cancelled, its reversal. Content comes from the refund's own fields only, so
    any order, any redelivery and either source of the refund give the same postings."""
    refunds: dict[str, dict[str, Any]] = {}
    undone: set[str] = set()
    for event in events:
        for stripe_refund in _refunds_seen(event):
            refunds[stripe_refund["id"]] = stripe_refund
            if stripe_refund.get("status") in REFUND_UNDONE_STATUSES:
                undone.add(stripe_refund["id"])
    transactions: list[Transaction] = []
    for refund_id, stripe_refund in sorted(refunds.items()):
        if int(stripe_refund["amount"]) <= 0:
            continue
        posted = refund_posting(
            refund_id=refund_id,
            charge_id=str(stripe_refund.get("charge") or ""),
            amount_minor=Decimal(int(stripe_refund["amount"])),
            currency=str(stripe_refund["currency"]),
            effective_at=datetime.fromtimestamp(int(stripe_refund["created"]), UTC),
        )
        transactions.append(posted)
        if refund_id in undone:  # as if it never left: Stripe gives no time of the failure
            transactions.append(posted.reversal(f"refund_failed:{refund_id}", posted.effective_at))
    return transactions


def _record_dispute(conn: psycopg.Connection, event: StoredEvent) -> None:
    dispute = event.payload["data"]["object"]
    with conn.transaction():
        conn.execute(
            """
            insert into stripe_sync.disputes (dispute_id, charge_id, amount, currency, reason,
                status, created)
            values (%s, %s, %s, %s, %s, %s, %s)
            on conflict (dispute_id) do nothing
            """,
            [
                dispute["id"],
                dispute.get("charge"),
                int(dispute.get("amount") or 0),
                dispute.get("currency") or "",
                dispute.get("reason"),
                dispute.get("status") or "needs_response",
                int(dispute.get("created") or event.created),
            ],
        )


def _apply_subscription(conn: psycopg.Connection, events: list[StoredEvent]) -> None:
    """The subscription as its newest event says (by ``created``; a deletion wins a tie)."""
    latest = max(events, key=lambda e: (e.created, e.event_type.endswith(".deleted"), e.event_id))
    sub = latest.payload["data"]["object"]
    status = "canceled" if latest.event_type.endswith(".deleted") else str(sub["status"])
    metadata = sub.get("metadata") or {}
    with conn.transaction():
        conn.execute(
            """
            insert into stripe_sync.subscriptions (subscription_id, customer_id, status, plan_id,
                current_period_start, current_period_end, as_of_event, as_of_created)
            values (%s, %s, %s, %s, %s, %s, %s, %s)
            on conflict (subscription_id) do update set
                customer_id = excluded.customer_id, status = excluded.status,
                plan_id = excluded.plan_id,
                current_period_start = excluded.current_period_start,
                current_period_end = excluded.current_period_end,
                as_of_event = excluded.as_of_event, as_of_created = excluded.as_of_created
            """,
            [
                sub["id"],
                sub["customer"],
                status,
                metadata.get("plan_id"),
                *subscription_period(sub),
                latest.event_id,
                latest.created,
            ],
        )


def process_stored_events(
    conn: psycopg.Connection, book: Ledger, *, only_unprocessed: bool = True
) -> tuple[int, int]:
    """Process stored events again (those not processed yet, or all); returns (objects, failed)."""
    where = "where processed_at is null" if only_unprocessed else ""
    objects = [
        object_id
        for (object_id,) in conn.execute(
            f"select distinct object_id from stripe_sync.webhook_events {where} order by object_id"
        ).fetchall()
        if object_id
    ]
    failed = 0
    for object_id in objects:
        if not _process_recording_errors(conn, book, object_id):
            failed += 1
        crash_point("webhooks.reprocess_after_object")
    return len(objects), failed


def _process_recording_errors(conn: psycopg.Connection, book: Ledger, object_id: str) -> bool:
    try:
        process_object(conn, book, object_id)
        return True
    except Exception as error:  # kept with the event, reported, retried later
        log.exception("Processing the webhook events of %s failed", object_id)
        with conn.transaction():
            conn.execute(
                "update stripe_sync.webhook_events set processing_error = %s "
                "where object_id = %s and processed_at is null",
                [f"{type(error).__name__}: {error}", object_id],
            )
        return False


def create_webhook_app(
    ledger_url: str, signing_secret: str, *, tolerance: int = SIGNATURE_TOLERANCE_SECONDS
) -> Starlette:
    """The receiver as an ASGI app (uvicorn serves it; the billing API mounts it)."""

    def connect() -> tuple[psycopg.Connection, Ledger]:
        book = Ledger.connect(ledger_url)
        conn = psycopg.connect(ledger_url, autocommit=True)
        ensure_schema(conn)
        return conn, book

    async def receive(request: Request) -> JSONResponse:
        body = await request.body()
        try:
            event = stripe.Webhook.construct_event(
                body, request.headers.get("stripe-signature", ""), signing_secret, tolerance
            )
        except stripe.SignatureVerificationError as error:
            return JSONResponse({"error": f"Bad signature: {error}"}, status_code=400)
        except ValueError as error:
            return JSONResponse({"error": f"Not a Stripe event: {error}"}, status_code=400)
        raw = json.loads(body)
        conn, book = connect()
        try:
            new = store_event(conn, raw)
            crash_point("webhooks.after_store_before_process")
            object_id = raw.get("data", {}).get("object", {}).get("id")
            processed = _process_recording_errors(conn, book, object_id) if object_id else True
        finally:
            conn.close()
            book.close()
        return JSONResponse(
            {"received": event.id, "new": new, "processed": processed}, status_code=200
        )

    return Starlette(routes=[Route("/stripe/webhooks", receive, methods=["POST"])])


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    """A ``Stripe-Signature`` header as Stripe computes it (for senders and tests)."""
    import hashlib
    import hmac

    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def events_to_json(events: Iterable[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(e, separators=(",", ":")).encode() for e in events]

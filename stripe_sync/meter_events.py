"""Usage to Stripe Billing Meters, exactly once.

One meter event per customer, meter and usage day (a *slot*): daily slots match the pipeline's
partitions and the invoice's granularity, and keep the request count far under Stripe's limits.
When late usage raises a slot that was already sent, a new revision sends only the increase, with
its own identifier. The identifier and the Idempotency-Key are both derived from the slot and the
revision, so a retry, a re-run or a backfill can never count usage twice.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

import psycopg
import stripe
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from crash_points import crash_point
from stripe_sync.outbox import (
    OutboxIntent,
    PendingWrite,
    SlotTotal,
    WriteOutcome,
    pending_writes,
    record_outcomes,
)

METER_EVENT_OPERATION = "meter_event"
MAX_ATTEMPTS = 6
# Concurrent requests to Stripe (each lane is one customer and meter, sent one at a time).
MAX_CONCURRENT_REQUESTS = 8
RECORD_BATCH = 500
DUPLICATE_IDENTIFIER_CODES = ("duplicate_meter_event", "resource_already_exists")
RETRYABLE_ERRORS = (stripe.RateLimitError, stripe.APIConnectionError, stripe.APIError)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MeterSlot:
    """The quantity used in one slot, as ``billable_usage_daily`` says."""

    customer_id: str
    meter_id: str
    usage_date: date
    quantity: int
    # A meter whose days add the change of a period's maximum, latest value or distinct count
    # (pricing.meters): its slots may legitimately go down, and Stripe takes negative values.
    may_decrease: bool = False

    @property
    def slot_id(self) -> str:
        return f"{self.customer_id}:{self.meter_id}:{self.usage_date.isoformat()}"


@dataclass(frozen=True)
class SendReport:
    sent: int
    dead: int
    attempts: int
    still_pending: int


def meter_event_identifier(slot_id: str, revision: int) -> str:
    """Stripe allows 100 characters; a digest keeps long customer or meter ids inside that."""
    digest = hashlib.sha256(f"{METER_EVENT_OPERATION}:{slot_id}:r{revision}".encode()).hexdigest()
    return f"mb1_{digest[:48]}"


def plan_meter_events(
    slots: Iterable[MeterSlot], *, recorded: Mapping[str, SlotTotal], usage_dates: set[date]
) -> tuple[list[OutboxIntent], list[str]]:
    """Intents that bring Stripe's metered quantity to what was used, and the slots of count and
    sum meters that went *down*: usage that was sent cannot disappear, so that is reported, never
    silently sent. A slot that may decrease (``MeterSlot.may_decrease``) sends the negative
    difference, as Stripe documents for correcting usage."""
    intents: list[OutboxIntent] = []
    decreases: list[str] = []
    for slot in sorted(slots, key=lambda s: s.slot_id):
        if slot.usage_date not in usage_dates:
            continue
        total = recorded.get(slot.slot_id, SlotTotal(revisions=0, quantity=0))
        delta = slot.quantity - total.quantity
        if delta == 0:
            continue
        if delta < 0 and not slot.may_decrease:
            decreases.append(f"{slot.slot_id}: {total.quantity} sent, {slot.quantity} used now")
            continue
        revision = total.revisions + 1
        identifier = meter_event_identifier(slot.slot_id, revision)
        timestamp = int(datetime.combine(slot.usage_date, time(0), tzinfo=UTC).timestamp())
        intents.append(
            OutboxIntent(
                idempotency_key=identifier,
                operation=METER_EVENT_OPERATION,
                slot_id=slot.slot_id,
                revision=revision,
                quantity_delta=delta,
                request_payload={
                    "event_name": slot.meter_id,
                    "identifier": identifier,
                    "timestamp": timestamp,
                    "payload": {"stripe_customer_id": slot.customer_id, "value": str(delta)},
                },
            )
        )
    return intents, decreases


def _already_recorded(error: stripe.StripeError) -> bool:
    """Stripe refuses a second event with an identifier it holds: the first one arrived.

    Stripe's v1 answer is a 400 ``invalid_request_error`` saying "An event already exists with
    identifier …", with no error code; the message is what identifies it. The codes are accepted
    too, in case a Stripe-compatible server sets one.
    """
    if not isinstance(error, stripe.InvalidRequestError):
        return False
    message = str(getattr(error, "user_message", None) or error)
    return error.code in DUPLICATE_IDENTIFIER_CODES or "already exists with identifier" in message


def _send_one(client: stripe.StripeClient, write: PendingWrite, max_attempts: int) -> WriteOutcome:
    attempts = 0
    try:
        for attempt in Retrying(
            retry=retry_if_exception_type(RETRYABLE_ERRORS),
            wait=wait_random_exponential(multiplier=0.05, max=2.0),
            stop=stop_after_attempt(max_attempts),
            reraise=False,
        ):
            with attempt:
                attempts += 1
                event = client.v1.billing.meter_events.create(
                    params=write.request_payload,  # type: ignore[arg-type]
                    options={"idempotency_key": write.idempotency_key},
                )
                crash_point("stripe.v1_after_request_before_outbox_update")
        return WriteOutcome(write.id, "sent", attempts, event.identifier, None)
    except RetryError as error:
        cause = error.last_attempt.exception()
        return WriteOutcome(write.id, "pending", attempts, None, str(cause))
    except stripe.StripeError as error:
        if _already_recorded(error):
            identifier = str(write.request_payload.get("identifier"))
            return WriteOutcome(write.id, "sent", attempts, identifier, None)
        log.error("Stripe rejected meter event %s: %s", write.idempotency_key, error)
        return WriteOutcome(write.id, "dead", attempts, None, str(error))


def _send_lane(
    client: stripe.StripeClient, lane: list[PendingWrite], max_attempts: int
) -> list[WriteOutcome]:
    return [_send_one(client, write, max_attempts) for write in lane]


def send_pending_meter_events(
    conn: psycopg.Connection,
    client: stripe.StripeClient,
    *,
    max_attempts: int = MAX_ATTEMPTS,
    concurrency: int = MAX_CONCURRENT_REQUESTS,
) -> SendReport:
    """Send every pending meter event; retry transient errors with backoff and jitter.

    Stripe allows one request at a time per customer and meter, so writes are grouped into
    lanes by (customer, meter); up to ``concurrency`` lanes are sent at once. Validation errors
    (4xx) are not retried: the write goes to ``dead`` with Stripe's message. A write that still
    fails transiently after ``max_attempts`` stays ``pending`` for the next run. Outcomes are
    recorded as lanes finish, so a crash loses at most the lanes in flight (which a re-run sends
    again under the same idempotency keys: Stripe replays them).
    """
    lanes: dict[tuple[str, str], list[PendingWrite]] = defaultdict(list)
    for write in pending_writes(conn, METER_EVENT_OPERATION):
        payload = write.request_payload.get("payload", {})
        customer = str(payload.get("stripe_customer_id")) if isinstance(payload, dict) else ""
        lanes[(customer, str(write.request_payload.get("event_name")))].append(write)
    counts = {"sent": 0, "dead": 0, "pending": 0}
    attempts_total = 0
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = [pool.submit(_send_lane, client, lane, max_attempts) for lane in lanes.values()]
        finished: list[WriteOutcome] = []
        for future in as_completed(futures):
            finished.extend(future.result())
            if len(finished) >= RECORD_BATCH:
                record_outcomes(conn, finished)
                finished = []
        record_outcomes(conn, finished)
    for outcome in _all_outcomes(futures):
        counts[outcome.state] += 1
        attempts_total += outcome.attempts
    return SendReport(
        sent=counts["sent"],
        dead=counts["dead"],
        attempts=attempts_total,
        still_pending=counts["pending"],
    )


def _all_outcomes(futures: list[Future[list[WriteOutcome]]]) -> Iterator[WriteOutcome]:
    for future in futures:
        yield from future.result()


def _transient_retrying(max_attempts: int = MAX_ATTEMPTS) -> Retrying:
    """Retries for calls that are safe to repeat: reads, and writes with an idempotency key."""
    return Retrying(
        retry=retry_if_exception_type(RETRYABLE_ERRORS),
        wait=wait_random_exponential(multiplier=0.05, max=2.0),
        stop=stop_after_attempt(max_attempts),
        reraise=True,
    )


def ensure_meters(client: stripe.StripeClient, meters: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Create the Billing Meters that do not exist yet (by ``event_name``); returns name -> id.

    Transient errors are retried: the listing is a read, and each creation carries the
    idempotency key ``meter:<event_name>``, so a response lost after Stripe created the meter
    replays the same meter instead of making a second one.
    """
    existing: dict[str, str] = {}
    for attempt in _transient_retrying():
        with attempt:
            listed = list(client.v1.billing.meters.list(params={"limit": 100}).auto_paging_iter())
    for meter in listed:
        if meter.status == "active":
            existing[meter.event_name] = meter.id
    for event_name, display_name in meters:
        if event_name in existing:
            continue
        for attempt in _transient_retrying():
            with attempt:
                created = client.v1.billing.meters.create(
                    params={
                        "display_name": display_name[:250],
                        "event_name": event_name,
                        "default_aggregation": {"formula": "sum"},
                        "customer_mapping": {
                            "event_payload_key": "stripe_customer_id",
                            "type": "by_id",
                        },
                        "value_settings": {"event_payload_key": "value"},
                    },
                    options={"idempotency_key": f"meter:{event_name}"},
                )
        existing[event_name] = created.id
    return existing


__all__ = [
    "METER_EVENT_OPERATION",
    "MeterSlot",
    "SendReport",
    "ensure_meters",
    "meter_event_identifier",
    "plan_meter_events",
    "send_pending_meter_events",
]

"""Sending the outbox's meter events on Stripe's v2 meter event stream: 100 events a request.

The v1 endpoint takes one event per request and one request at a time per customer and meter;
a day of 2,000 customers x 12 meters is 24,000 requests. The v2 stream takes batches of up to 100
events, authenticated by a meter event session (a token valid 15 minutes, renewed here before it
expires or when Stripe says it has), so the same day is 240 requests.

Exactly once, as with v1: every event carries the identifier derived from its slot and revision,
and Stripe ignores an identifier it has seen (within its 24-hour window; the outbox records a
write as sent once Stripe accepted it, so only a crash between acceptance and recording resends,
minutes later). Each request carries an Idempotency-Key derived from the identifiers it holds.

The stream validates events after accepting the request (Stripe reports refused events as meter
error reports). To keep a bad event from hiding among good ones, a batch the stream refuses as
a whole (a 4xx) is sent again event by event on v1, where each event gets its own verdict: sent,
or dead with Stripe's message.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import UTC, datetime, timedelta

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
from stripe_sync.meter_events import (
    MAX_ATTEMPTS,
    METER_EVENT_OPERATION,
    RECORD_BATCH,
    RETRYABLE_ERRORS,
    SendReport,
    _send_one,
)
from stripe_sync.outbox import PendingWrite, WriteOutcome, pending_writes, record_outcomes

EVENTS_PER_REQUEST = 100
# Batches in flight at once: the stream's limit (10,000 requests/s live) is far away; two
# keep the sender busy while the server works, without flooding a small local server.
CONCURRENT_BATCHES = 2
SESSION_RENEW_BEFORE = timedelta(minutes=1)
STREAM_RETRYABLE = (*RETRYABLE_ERRORS, stripe.TemporarySessionExpiredError)

log = logging.getLogger(__name__)


class MeterEventSession:
    """The current session, created with the secret key and renewed when due, and a client
    authenticated by its token (one per session, so its connections are reused)."""

    def __init__(
        self, client: stripe.StripeClient, stream_client: Callable[[str], stripe.StripeClient]
    ) -> None:
        self._client = client
        self._stream_client = stream_client
        self._lock = threading.Lock()
        self._current: stripe.StripeClient | None = None
        self._renew_at = 0.0  # time.monotonic() seconds

    def client(self, *, renew: bool = False) -> stripe.StripeClient:
        with self._lock:
            if renew or self._current is None or time.monotonic() >= self._renew_at:
                started = time.monotonic()
                session = self._client.v2.billing.meter_event_session.create()
                self._current = self._stream_client(session.authentication_token)
                # The session's lifetime by Stripe's clock, counted on ours: immune to a
                # difference between the two clocks.
                lifetime = _parse_time(session.expires_at) - _parse_time(session.created)
                self._renew_at = started + (lifetime - SESSION_RENEW_BEFORE).total_seconds()
            return self._current


def _parse_time(value: object) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def stream_event(write: PendingWrite) -> dict[str, object]:
    """The outbox's v1 request as a v2 stream event (RFC 3339 timestamp, string values)."""
    payload = write.request_payload
    timestamp = datetime.fromtimestamp(int(payload["timestamp"]), UTC)
    return {
        "event_name": payload["event_name"],
        "identifier": payload["identifier"],
        "payload": {str(k): str(v) for k, v in dict(payload["payload"]).items()},
        "timestamp": timestamp.isoformat().replace("+00:00", "Z"),
    }


def batch_idempotency_key(batch: Sequence[PendingWrite]) -> str:
    digest = hashlib.sha256("\n".join(sorted(w.idempotency_key for w in batch)).encode())
    return f"mbs1_{digest.hexdigest()[:48]}"


def _send_batch(
    client: stripe.StripeClient,
    session: MeterEventSession,
    batch: list[PendingWrite],
    max_attempts: int,
) -> list[WriteOutcome]:
    attempts = 0
    renew = False
    try:
        for attempt in Retrying(
            retry=retry_if_exception_type(STREAM_RETRYABLE),
            wait=wait_random_exponential(multiplier=0.05, max=2.0),
            stop=stop_after_attempt(max_attempts),
            reraise=False,
        ):
            with attempt:
                attempts += 1
                stream = session.client(renew=renew)
                renew = False
                try:
                    stream.v2.billing.meter_event_stream.create(
                        params={"events": [stream_event(w) for w in batch]},  # type: ignore[typeddict-item]
                        options={"idempotency_key": batch_idempotency_key(batch)},
                    )
                except stripe.TemporarySessionExpiredError:
                    renew = True
                    raise
                crash_point("stripe.after_request_before_outbox_update")
        return [
            WriteOutcome(w.id, "sent", attempts, str(w.request_payload["identifier"]), None)
            for w in batch
        ]
    except RetryError as error:
        cause = error.last_attempt.exception()
        return [WriteOutcome(w.id, "pending", attempts, None, str(cause)) for w in batch]
    except stripe.StripeError as error:
        log.warning(
            "The meter event stream refused a batch of %d (%s); sending it event by event",
            len(batch),
            error,
        )
        return [_send_one(client, write, max_attempts) for write in batch]


def send_pending_meter_events_stream(
    conn: psycopg.Connection,
    client: stripe.StripeClient,
    stream_client: Callable[[str], stripe.StripeClient],
    *,
    max_attempts: int = MAX_ATTEMPTS,
    concurrency: int = CONCURRENT_BATCHES,
    session: MeterEventSession | None = None,
) -> SendReport:
    """Send every pending meter event in batches on the v2 stream; record outcomes as batches
    finish. ``stream_client(token)`` builds a client authenticated by a session token with the
    same addresses as ``client``; a long-lived caller may pass its ``session`` to reuse it
    across sends."""
    writes = pending_writes(conn, METER_EVENT_OPERATION)
    batches = [
        writes[start : start + EVENTS_PER_REQUEST]
        for start in range(0, len(writes), EVENTS_PER_REQUEST)
    ]
    if not batches:
        return SendReport(sent=0, dead=0, attempts=0, still_pending=0)
    session = session or MeterEventSession(client, stream_client)
    counts = {"sent": 0, "dead": 0, "pending": 0}
    attempts_total = 0
    finished: list[WriteOutcome] = []
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = [
            pool.submit(_send_batch, client, session, batch, max_attempts) for batch in batches
        ]
        for future in as_completed(futures):
            outcomes = future.result()
            for outcome in outcomes:
                counts[outcome.state] += 1
            # A batch's attempts count once, not once per event.
            attempts_total += max((o.attempts for o in outcomes), default=0)
            finished.extend(outcomes)
            if len(finished) >= RECORD_BATCH:
                record_outcomes(conn, finished)
                finished = []
    record_outcomes(conn, finished)
    return SendReport(
        sent=counts["sent"],
        dead=counts["dead"],
        attempts=attempts_total,
        still_pending=counts["pending"],
    )

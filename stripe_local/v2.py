"""Stripe's v2 high-throughput meter event stream: a session, then batches of up to 100 events.

As with Stripe: a session is created with the secret key and yields a token valid for
15 minutes; the stream is called with that token (JSON bodies, v2 error shapes), checks the
request's shape at once, and processes each event afterwards — an event Stripe would refuse
(no active meter, unknown customer, a timestamp outside the window, a value that is not a
number) does not fail the request but is recorded as an error report, and an event whose
identifier was seen before is ignored.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from stripe_local.errors import StripeError, new_id, request_id_header

SESSION_SECONDS = 15 * 60
MAX_EVENTS_PER_REQUEST = 100
MAX_NAME_LENGTH = 100  # event_name and identifier
EVENT_FIELDS = {"event_name", "identifier", "payload", "timestamp"}
# (event_name, payload, timestamp or None, identifier or None) -> raises StripeError or records
AcceptEvent = Callable[[str, dict[str, str], int | None, str | None], bool]


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _bad(message: str, code: str = "invalid_request") -> StripeError:
    return StripeError(400, message, code=code, error_type="invalid_request_error")


def _parse_events(body: bytes) -> list[dict[str, Any]]:
    """The request's events, checked like Stripe checks the request synchronously."""
    try:
        document = json.loads(body or b"{}")
    except ValueError as error:
        raise _bad(f"The request body is not valid JSON: {error}.") from error
    if not isinstance(document, dict) or set(document) - {"events"}:
        unknown = sorted(set(document) - {"events"}) if isinstance(document, dict) else []
        raise _bad(f"Unknown parameters: {', '.join(unknown) or 'body must be an object'}.")
    events = document.get("events")
    if not isinstance(events, list) or not 1 <= len(events) <= MAX_EVENTS_PER_REQUEST:
        raise _bad(f"events must be a list of 1 to {MAX_EVENTS_PER_REQUEST} meter events.")
    for index, event in enumerate(events):
        where = f"events[{index}]"
        if not isinstance(event, dict):
            raise _bad(f"{where} must be an object.")
        unknown = sorted(set(event) - EVENT_FIELDS)
        if unknown:
            raise _bad(f"{where}: unknown parameters {', '.join(unknown)}.")
        if not isinstance(event.get("event_name"), str) or not event["event_name"]:
            raise _bad(f"{where}.event_name is required and must be a string.")
        payload = event.get("payload")
        if not isinstance(payload, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in payload.items()
        ):
            raise _bad(f"{where}.payload is required: an object of string values.")
        for name in ("identifier", "timestamp"):
            if name in event and not isinstance(event[name], str):
                raise _bad(f"{where}.{name} must be a string.")
        for name in ("event_name", "identifier"):
            if len(event.get(name, "")) > MAX_NAME_LENGTH:
                raise _bad(f"{where}.{name} must be at most {MAX_NAME_LENGTH} characters.")
        if "timestamp" in event:
            try:
                parsed = datetime.fromisoformat(event["timestamp"])
            except ValueError as error:
                raise _bad(f"{where}.timestamp must be an RFC 3339 date-time.") from error
            if parsed.utcoffset() is None:
                raise _bad(f"{where}.timestamp needs a time zone (e.g. 'Z').")
    return events


def v2_meter_event_routes(
    *,
    clock: Callable[[], int],
    api_key_of: Callable[[Request], str],
    accept_event: AcceptEvent,
    record_error: Callable[[dict[str, Any]], None],
    bump: Callable[[str], None],
) -> list[Route]:
    sessions: dict[str, int] = {}  # token -> expires at (seconds)
    lock = threading.Lock()

    async def create_session(request: Request) -> Response:
        bump("requests")
        bump("requests:POST /v2/billing/meter_event_session")
        try:
            api_key_of(request)
            now = clock()
            token = f"mes_tok_{secrets.token_hex(16)}"
            with lock:
                sessions[token] = now + SESSION_SECONDS
            body = {
                "id": new_id("mes"),
                "object": "v2.billing.meter_event_session",
                "authentication_token": token,
                "created": _iso(now),
                "expires_at": _iso(now + SESSION_SECONDS),
                "livemode": False,
            }
            return JSONResponse(body, headers=request_id_header())
        except StripeError as error:
            return error.response()

    async def stream(request: Request) -> Response:
        bump("requests")
        bump("requests:POST /v2/billing/meter_event_stream")
        try:
            token = request.headers.get("authorization", "").partition(" ")[2].strip()
            with lock:
                expires_at = sessions.get(token)
            if expires_at is None:
                raise StripeError(
                    401,
                    "Invalid or unknown meter event session token.",
                    error_type="invalid_request_error",
                )
            if clock() >= expires_at:
                raise StripeError(
                    401,
                    "The meter event session has expired; create a new one.",
                    code="billing_meter_event_session_expired",
                    error_type="temporary_session_expired",
                )
            events = _parse_events(await request.body())
            for event in events:
                timestamp = (
                    int(datetime.fromisoformat(event["timestamp"]).timestamp())
                    if "timestamp" in event
                    else None
                )
                try:
                    if not accept_event(
                        event["event_name"], event["payload"], timestamp, event.get("identifier")
                    ):
                        bump("v2_duplicates_ignored")
                except StripeError as error:
                    record_error(
                        {
                            "event": event,
                            "code": error.code,
                            "message": error.message,
                            "received": clock(),
                        }
                    )
            return JSONResponse({}, headers=request_id_header())
        except StripeError as error:
            return error.response()

    return [
        Route("/v2/billing/meter_event_session", create_session, methods=["POST"]),
        Route("/v2/billing/meter_event_stream", stream, methods=["POST"]),
    ]

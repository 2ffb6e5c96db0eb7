"""A strict Stripe-compatible HTTP API for what Meterbook uses: customers, Billing Meters, meter
events (v1, and the v2 stream), with Stripe's idempotency rules, parameter checks and error
shapes, so code that passes against it works unchanged against Stripe. Faults on demand."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import stripe.params as core_params
import stripe.params.billing as billing_params
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from stripe_local.billing import billing_routes
from stripe_local.catalog import catalog_routes
from stripe_local.errors import StripeError, new_id, not_found, request_id_header
from stripe_local.faults import FaultInjector, FaultPlan, MeterCorruption
from stripe_local.params import (
    check_parameters,
    hash_param,
    integer_param,
    metadata_param,
    parse_form,
    string_param,
)
from stripe_local.store import LocalStripeStore
from stripe_local.v2 import v2_meter_event_routes

Clock = Callable[[], int]
Action = Callable[[Request, dict[str, Any]], Awaitable[dict[str, Any]]]

METER_EVENT_MAX_AGE_SECONDS = 35 * 24 * 3600
METER_EVENT_MAX_AHEAD_SECONDS = 5 * 60
IDEMPOTENCY_WINDOW_SECONDS = 24 * 3600
IDEMPOTENCY_KEY_MAX_LENGTH = 255
IDENTIFIER_MAX_LENGTH = 100
EVENT_NAME_MAX_LENGTH = 100
DISPLAY_NAME_MAX_LENGTH = 250
GROUPING_WINDOWS = {"hour": 3600, "day": 86400}
# Stripe takes negative values to correct usage recorded before ("If the overall cycle usage is
# negative, Stripe reports the invoice line item usage quantity as 0").
WHOLE_NUMBER = re.compile(r"-?[0-9]+")


def redact(key: str) -> str:
    """An API key as Stripe echoes it in errors: its prefix and last four characters."""
    head, tail = key[:8], key[-4:] if len(key) > 12 else ""
    return f"{head}{'*' * max(len(key) - len(head) - len(tail), 0)}{tail}"


def api_key_of(request: Request) -> str:
    """The secret test key of a request (Bearer, or Basic with the key as user name)."""
    header = request.headers.get("authorization", "")
    if not header:
        raise StripeError(
            401,
            "You did not provide an API key. You need to provide your API key in the "
            "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
            "YOUR_SECRET_KEY').",
            headers={"WWW-Authenticate": 'Basic realm="Stripe"'},
        )
    scheme, _, credentials = header.partition(" ")
    key = credentials.strip()
    if scheme.lower() == "basic":
        try:
            key = base64.b64decode(key, validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            key = ""
    elif scheme.lower() != "bearer":
        key = ""
    if not key.startswith("sk_test_") or len(key) <= len("sk_test_"):
        raise StripeError(
            401,
            f"Invalid API Key provided: {redact(key)} (the local Stripe accepts secret test "
            "keys, sk_test_..., only).",
            headers={"WWW-Authenticate": 'Basic realm="Stripe"'},
        )
    return key


def listing(
    request: Request, objects: list[dict[str, Any]], params: dict[str, Any], kind: str
) -> dict[str, Any]:
    """One page of a Stripe list (``limit`` 1..100, ``starting_after`` / ``ending_before``)."""
    limit = integer_param(params, "limit", default=10)
    if not 1 <= limit <= 100:
        raise StripeError(
            400,
            f"Invalid limit: {limit}. Limit must be between 1 and 100.",
            code="parameter_invalid_integer",
            param="limit",
        )
    starting_after = string_param(params, "starting_after")
    ending_before = string_param(params, "ending_before")
    if starting_after and ending_before:
        raise StripeError(
            400,
            "You may only specify one of these parameters: ending_before, starting_after.",
            code="parameters_exclusive",
        )
    ids = [o["id"] for o in objects]
    for cursor, name in ((starting_after, "starting_after"), (ending_before, "ending_before")):
        if cursor and cursor not in ids:
            raise StripeError(
                400, f"No such {kind}: '{cursor}'", code="resource_missing", param=name
            )
    if starting_after:
        rest = objects[ids.index(starting_after) + 1 :]
        page, has_more = rest[:limit], len(rest) > limit
    elif ending_before:
        before = objects[: ids.index(ending_before)]
        page, has_more = before[-limit:], len(before) > limit
    else:
        page, has_more = objects[:limit], len(objects) > limit
    return {"object": "list", "url": request.url.path, "data": page, "has_more": has_more}


def create_app(
    store: LocalStripeStore, clock: Clock, fault_plan: FaultPlan | None = None
) -> FaultInjector:
    """The ASGI app: Stripe's routes over ``store``, with ``clock()`` as the server's time,
    behind the fault injector (which injects nothing unless ``fault_plan`` says so)."""
    corruption = MeterCorruption()  # counts every meter event as sent until told otherwise

    def handler(
        action: Action, route_name: str, *, idempotent: bool
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            store.bump("requests")
            store.bump(f"requests:{route_name}")
            version = request.headers.get("stripe-version")
            try:
                api_key = api_key_of(request)
                if request.method == "GET":
                    params = parse_form(request.url.query.encode())
                else:
                    params = parse_form(await request.body())
                key = request.headers.get("idempotency-key") if idempotent else None
                if key is None:
                    response: Response = JSONResponse(
                        await action(request, params), headers=request_id_header()
                    )
                else:
                    response = await idempotently(request, api_key, key, params, action)
            except StripeError as error:
                response = error.response()
            if version:  # any version is accepted; Stripe names the one it answered with
                response.headers["Stripe-Version"] = version
            return response

        return endpoint

    async def idempotently(
        request: Request, api_key: str, key: str, params: dict[str, Any], action: Action
    ) -> Response:
        """Stripe's rules: a key replays its first successful response for 24 hours, for the
        same endpoint and parameters only. Requests that fail validation save nothing (the
        same key may be retried once the problem is fixed)."""
        if not key or len(key) > IDEMPOTENCY_KEY_MAX_LENGTH:
            raise StripeError(
                400,
                f"Invalid Idempotency-Key: it must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} "
                "characters long.",
                param="Idempotency-Key",
            )
        fingerprint = hashlib.sha256(
            json.dumps([request.method, request.url.path, params], sort_keys=True).encode()
        ).hexdigest()
        with store.lock:
            now = clock()
            store.forget_idempotent_responses(now - IDEMPOTENCY_WINDOW_SECONDS)
            saved = store.idempotent_response(api_key, key)
            if saved is not None:
                saved_fingerprint, status, body, _created = saved
                if saved_fingerprint != fingerprint:
                    raise StripeError(
                        400,
                        "Keys for idempotent requests can only be used with the same parameters "
                        f"they were first used with. Try using a key other than '{key}' if you "
                        "meant to execute a different request.",
                        error_type="idempotency_error",
                    )
                store.bump("idempotent_replays")
                return Response(
                    body,
                    status_code=status,
                    media_type="application/json",
                    headers={
                        "Idempotent-Replayed": "true",
                        "Idempotency-Key": key,
                        **request_id_header(),
                    },
                )
            encoded = json.dumps(await action(request, params))
            store.save_idempotent_response(api_key, key, fingerprint, 200, encoded, now)
        return Response(
            encoded,
            status_code=200,
            media_type="application/json",
            headers={"Idempotency-Key": key, **request_id_header()},
        )

    # Customers ------------------------------------------------------------------------------

    async def create_customer(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, core_params.CustomerCreateParams)
        customer = {
            "id": new_id("cus"),
            "object": "customer",
            "livemode": False,
            "created": clock(),
            "address": None,
            "balance": 0,
            "currency": None,
            "delinquent": False,
            "description": string_param(params, "description"),
            "email": string_param(params, "email"),
            "metadata": metadata_param(params),
            "name": string_param(params, "name"),
            "phone": string_param(params, "phone"),
            "preferred_locales": [],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": None,
        }
        store.put(customer)
        return customer

    async def list_customers(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, core_params.CustomerListParams)
        customers = store.list("customer")
        email = string_param(params, "email")
        if email:
            customers = [c for c in customers if c.get("email") == email]
        return listing(request, customers, params, "customer")

    async def get_customer(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, core_params.CustomerRetrieveParams)
        customer_id = request.path_params["id"]
        customer = store.get("customer", customer_id)
        if customer is None:
            raise not_found("customer", customer_id)
        return customer

    # Meters ---------------------------------------------------------------------------------

    def active_meter(event_name: str) -> dict[str, Any] | None:
        return next(
            (
                m
                for m in store.list("billing.meter")
                if m["event_name"] == event_name and m["status"] == "active"
            ),
            None,
        )

    def meter_in_path(request: Request) -> dict[str, Any]:
        meter_id = request.path_params["id"]
        meter = store.get("billing.meter", meter_id)
        if meter is None:
            raise not_found("billing.meter", meter_id)
        return meter

    def name_taken(event_name: str) -> StripeError:
        return StripeError(
            400,
            f"An active meter with event_name '{event_name}' already exists.",
            code="resource_already_exists",
            param="event_name",
        )

    async def create_meter(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, billing_params.MeterCreateParams)
        display_name = string_param(params, "display_name") or ""
        if len(display_name) > DISPLAY_NAME_MAX_LENGTH:
            raise StripeError(
                400,
                f"display_name must be at most {DISPLAY_NAME_MAX_LENGTH} characters.",
                param="display_name",
            )
        event_name = string_param(params, "event_name") or ""
        if len(event_name) > EVENT_NAME_MAX_LENGTH:
            raise StripeError(
                400,
                f"event_name must be at most {EVENT_NAME_MAX_LENGTH} characters.",
                param="event_name",
            )
        mapping = hash_param(params, "customer_mapping")
        value_settings = hash_param(params, "value_settings")
        with store.lock:
            if active_meter(event_name) is not None:
                raise name_taken(event_name)
            now = clock()
            meter = {
                "id": new_id("mtr"),
                "object": "billing.meter",
                "livemode": False,
                "created": now,
                "updated": now,
                "display_name": display_name,
                "event_name": event_name,
                "status": "active",
                "default_aggregation": {
                    "formula": hash_param(params, "default_aggregation")["formula"]
                },
                "customer_mapping": {
                    "event_payload_key": mapping.get("event_payload_key", "stripe_customer_id"),
                    "type": "by_id",
                },
                "value_settings": {
                    "event_payload_key": value_settings.get("event_payload_key", "value")
                },
                "event_time_window": string_param(params, "event_time_window"),
                "status_transitions": {"deactivated_at": None},
            }
            store.put(meter)
        return meter

    async def list_meters(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, billing_params.MeterListParams)
        meters = store.list("billing.meter")
        status = string_param(params, "status")
        if status:
            meters = [m for m in meters if m["status"] == status]
        return listing(request, meters, params, "billing.meter")

    async def get_meter(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, billing_params.MeterRetrieveParams)
        return meter_in_path(request)

    async def deactivate_meter(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, billing_params.MeterDeactivateParams)
        with store.lock:
            meter = meter_in_path(request)
            if meter["status"] == "active":
                now = clock()
                meter |= {"status": "inactive", "updated": now}
                meter["status_transitions"] = {"deactivated_at": now}
                store.put(meter)
        return meter

    async def reactivate_meter(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, billing_params.MeterReactivateParams)
        with store.lock:
            meter = meter_in_path(request)
            if meter["status"] != "active":
                if active_meter(meter["event_name"]) is not None:
                    raise name_taken(meter["event_name"])
                meter |= {"status": "active", "updated": clock()}
                meter["status_transitions"] = {"deactivated_at": None}
                store.put(meter)
        return meter

    # Meter events ---------------------------------------------------------------------------

    def accept_meter_event(
        event_name: str, payload: dict[str, Any], timestamp: int | None, identifier: str | None
    ) -> dict[str, Any] | None:
        """Record one meter event by Stripe's rules (v1 and v2 alike): the event, or None when
        its identifier was recorded before. Raises ``StripeError`` for an event Stripe refuses."""
        meter = active_meter(event_name)
        if meter is None:
            raise StripeError(
                400,
                f"No active meter found for event_name '{event_name}'.",
                code="resource_missing",
                param="event_name",
            )
        customer_key = meter["customer_mapping"]["event_payload_key"]
        value_key = meter["value_settings"]["event_payload_key"]
        customer_id = payload.get(customer_key)
        if not customer_id:
            raise StripeError(
                400,
                f"payload[{customer_key}] is required by meter {meter['id']}.",
                code="parameter_missing",
                param=f"payload[{customer_key}]",
            )
        if store.get("customer", customer_id) is None:
            raise StripeError(
                400,
                f"No such customer: '{customer_id}'",
                code="resource_missing",
                param=f"payload[{customer_key}]",
            )
        raw_value = payload.get(value_key)
        if raw_value is None:
            raise StripeError(
                400,
                f"payload[{value_key}] is required by meter {meter['id']}.",
                code="parameter_missing",
                param=f"payload[{value_key}]",
            )
        if not WHOLE_NUMBER.fullmatch(raw_value):
            raise StripeError(
                400,
                f"payload[{value_key}] must be a whole number, not {raw_value!r}.",
                code="parameter_invalid_integer",
                param=f"payload[{value_key}]",
            )
        now = clock()
        timestamp = now if timestamp is None else timestamp
        if timestamp < now - METER_EVENT_MAX_AGE_SECONDS:
            raise StripeError(
                400,
                f"timestamp {timestamp} is too far in the past: it must be within the past "
                f"35 calendar days (server time {now}).",
                code="timestamp_too_far_in_past",
                param="timestamp",
            )
        if timestamp > now + METER_EVENT_MAX_AHEAD_SECONDS:
            raise StripeError(
                400,
                f"timestamp {timestamp} is in the future: it may be at most 5 minutes ahead "
                f"(server time {now}).",
                code="timestamp_in_future",
                param="timestamp",
            )
        identifier = identifier or new_id("mev")
        if len(identifier) > IDENTIFIER_MAX_LENGTH:
            raise StripeError(
                400,
                f"identifier must be at most {IDENTIFIER_MAX_LENGTH} characters.",
                param="identifier",
            )
        event = {
            "object": "billing.meter_event",
            "livemode": False,
            "created": now,
            "event_name": event_name,
            "identifier": identifier,
            "payload": payload,
            "timestamp": timestamp,
        }
        applied, corrupted = corruption.applied_value(identifier, int(raw_value))
        stored = store.add_meter_event(
            event, customer_id, int(raw_value), None if corrupted is None else (applied, corrupted)
        )
        return event if stored else None

    async def create_meter_event(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, billing_params.MeterEventCreateParams)
        identifier = string_param(params, "identifier")
        timestamp = integer_param(params, "timestamp") if "timestamp" in params else None
        event = accept_meter_event(
            string_param(params, "event_name") or "",
            hash_param(params, "payload"),
            timestamp,
            identifier,
        )
        if event is None:
            # Stripe's answer, as observed against it: a 400 invalid_request_error with this
            # message, no code and no param, and Stripe-Should-Retry: false.
            raise StripeError(
                400,
                f"An event already exists with identifier {identifier}.",
                should_retry=False,
            )
        return event

    def record_meter_event_error(report: dict[str, Any]) -> None:
        store.put(
            {
                "id": new_id("mee"),
                "object": "billing.meter_event_error",
                "created": clock(),
                **report,
            }
        )

    def v2_accept(
        event_name: str, payload: dict[str, str], timestamp: int | None, identifier: str | None
    ) -> bool:
        with store.lock:
            return accept_meter_event(event_name, payload, timestamp, identifier) is not None

    async def event_summaries(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, billing_params.MeterListEventSummariesParams)
        meter = meter_in_path(request)
        customer = string_param(params, "customer") or ""
        if store.get("customer", customer) is None:
            raise not_found("customer", customer, "customer")
        start, end = integer_param(params, "start_time"), integer_param(params, "end_time")
        for value, name in ((start, "start_time"), (end, "end_time")):
            if value % 60:
                raise StripeError(
                    400, f"{name} must be aligned with minute boundaries.", param=name
                )
        if end <= start:
            raise StripeError(400, "end_time must be after start_time.", param="end_time")
        window = string_param(params, "value_grouping_window")
        step = end - start
        if window is not None:
            step = GROUPING_WINDOWS[window]
            if start % step or end % step:
                raise StripeError(
                    400,
                    f"start_time and end_time must align with {window} boundaries (UTC).",
                    param="start_time",
                )
        formula = meter["default_aggregation"]["formula"]
        summaries = [
            {
                "id": f"mtrusg_{meter['id'].removeprefix('mtr_')}_{customer}_{window_start}",
                "object": "billing.meter_event_summary",
                "aggregated_value": store.meter_event_aggregate(
                    meter["event_name"], customer, window_start, window_start + step, formula
                ),
                "start_time": window_start,
                "end_time": window_start + step,
                "livemode": False,
                "meter": meter["id"],
            }
            for window_start in range(start, end, step)
        ]
        summaries.reverse()  # newest window first, as Stripe lists them
        return listing(request, summaries, params, "billing.meter_event_summary")

    # Test-only (not Stripe's) ---------------------------------------------------------------

    async def local_meter_events(request: Request) -> Response:
        return JSONResponse(store.meter_events())

    async def local_meter_event_errors(request: Request) -> Response:
        return JSONResponse(store.list("billing.meter_event_error"))

    async def local_faults(request: Request) -> Response:
        if request.method == "POST":
            try:
                faults.plan = FaultPlan.parse((await request.body()).decode())
            except ValueError as error:
                return JSONResponse({"error": str(error)}, status_code=400)
        return JSONResponse(faults.plan.describe())

    async def local_corruption(request: Request) -> Response:
        nonlocal corruption
        if request.method == "POST":
            try:
                corruption = MeterCorruption.parse((await request.body()).decode())
            except ValueError as error:
                return JSONResponse({"error": str(error)}, status_code=400)
        return JSONResponse(
            {**corruption.describe(), "corrupted_events": store.meter_event_corruptions()}
        )

    async def local_stats(request: Request) -> Response:
        return JSONResponse(
            {
                "db_path": str(store.path),
                "customers": store.count("customer"),
                "meters": store.count("billing.meter"),
                "meter_events": store.meter_event_count(),
                "meter_event_errors": store.count("billing.meter_event_error"),
                "v2_duplicates_ignored": store.counter("v2_duplicates_ignored"),
                "faults_injected": faults.plan.describe()["injected"],
                "idempotent_replays": store.counter("idempotent_replays"),
                "requests": store.counter("requests"),
                "requests_by_path": {
                    name.removeprefix("requests:"): count
                    for name, count in store.counters("requests:").items()
                },
            }
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if status == 404:
            message = f"Unrecognized request URL ({request.method}: {request.url.path})."
        elif status == 405:
            message = f"Unrecognized request URL ({request.method}: {request.url.path})."
            status = 404
        else:
            message = "The local Stripe failed to handle the request."
        error_type = "api_error" if status >= 500 else "invalid_request_error"
        return StripeError(status, message, error_type=error_type).response()

    def route(path: str, get: Action | None = None, post: Action | None = None) -> list[Route]:
        routes = []
        if get is not None:
            routes.append(
                Route(path, handler(get, f"GET {path}", idempotent=False), methods=["GET"])
            )
        if post is not None:
            routes.append(
                Route(path, handler(post, f"POST {path}", idempotent=True), methods=["POST"])
            )
        return routes

    app = Starlette(
        routes=[
            *route("/v1/customers", get=list_customers, post=create_customer),
            *route("/v1/customers/{id}", get=get_customer),
            *catalog_routes(store, clock, route, listing),
            *billing_routes(store, clock, route, listing),
            *route("/v1/billing/meters", get=list_meters, post=create_meter),
            *route("/v1/billing/meters/{id}", get=get_meter),
            *route("/v1/billing/meters/{id}/deactivate", post=deactivate_meter),
            *route("/v1/billing/meters/{id}/reactivate", post=reactivate_meter),
            *route("/v1/billing/meters/{id}/event_summaries", get=event_summaries),
            *route("/v1/billing/meter_events", post=create_meter_event),
            *v2_meter_event_routes(
                clock=clock,
                api_key_of=api_key_of,
                accept_event=v2_accept,
                record_error=record_meter_event_error,
                bump=store.bump,
            ),
            Route("/_local/meter_events", local_meter_events, methods=["GET"]),
            Route("/_local/meter_event_errors", local_meter_event_errors, methods=["GET"]),
            Route("/_local/faults", local_faults, methods=["GET", "POST"]),
            Route("/_local/corruption", local_corruption, methods=["GET", "POST"]),
            Route("/_local/stats", local_stats, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: http_error},
    )
    faults = FaultInjector(app, fault_plan)
    return faults

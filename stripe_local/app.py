"""A strict Stripe-compatible HTTP API for what Meterbook uses: customers, Billing Meters and
meter events, with Stripe's idempotency rules, parameter checks and error shapes."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import stripe
import stripe.params as customer_params
import stripe.params.billing as billing_params
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from stripe_local.store import LocalStripeStore

Clock = Callable[[], int]
Action = Callable[[Request, dict[str, Any]], Awaitable[dict[str, Any]]]

METER_EVENT_MAX_AGE_SECONDS = 35 * 24 * 3600
METER_EVENT_MAX_AHEAD_SECONDS = 5 * 60
IDEMPOTENCY_WINDOW_SECONDS = 24 * 3600
IDEMPOTENCY_KEY_MAX_LENGTH = 255
IDENTIFIER_MAX_LENGTH = 100
EVENT_NAME_MAX_LENGTH = 100
IGNORED_PARAMETERS = frozenset({"expand"})
# Keys of the client's request options (api_key, idempotency_key, headers, ...): never API params.
REQUEST_OPTION_KEYS = frozenset(stripe.RequestOptions.__annotations__)
FORMULAS = ("sum", "count", "last")
GROUPING_WINDOWS = {"hour": 3600, "day": 86400}
WHOLE_NUMBER = re.compile(r"[0-9]+")
INTEGER = re.compile(r"-?[0-9]+")


class StripeError(Exception):
    """An error answered in Stripe's shape: ``{"error": {type, code, message, param}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = error_type

    def body(self) -> dict[str, Any]:
        """The JSON body Stripe would send."""
        return {
            "error": {
                "type": self.type,
                "code": self.code,
                "message": self.message,
                "param": self.param,
            }
        }

    def response(self) -> JSONResponse:
        """The HTTP response Stripe would send."""
        return JSONResponse(self.body(), status_code=self.status, headers=request_id_header())


def request_id_header() -> dict[str, str]:
    """Stripe names every response with a ``Request-Id``."""
    return {"Request-Id": new_id("req")}


def parse_form(body: bytes) -> dict[str, Any]:
    """Stripe's form encoding: ``a[b][c]=v`` becomes ``{"a": {"b": {"c": "v"}}}``."""
    result: dict[str, Any] = {}
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise StripeError(400, "The request body is not valid UTF-8.") from None
    for raw_key, value in parse_qsl(text, keep_blank_values=True):
        head, _, rest = raw_key.partition("[")
        parts = [head]
        if rest:
            if not rest.endswith("]"):
                raise StripeError(400, f"Invalid parameter name: {raw_key}", param=raw_key)
            parts += rest[:-1].split("][")
        if any(not part for part in parts):
            raise StripeError(400, f"Invalid parameter name: {raw_key}", param=raw_key)
        target = result
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise StripeError(400, f"Invalid parameter nesting in {raw_key}.", param=raw_key)
        if isinstance(target.get(parts[-1]), dict):
            raise StripeError(400, f"Invalid parameter nesting in {raw_key}.", param=raw_key)
        target[parts[-1]] = value
    return result


def allowed_parameters(params_type: type) -> set[str]:
    """Top-level API parameters of a ``stripe.params`` TypedDict (inherited ones included)."""
    keys = set(getattr(params_type, "__required_keys__", set()))
    keys |= set(getattr(params_type, "__optional_keys__", set()))
    keys |= set(getattr(params_type, "__annotations__", {}))
    return keys - REQUEST_OPTION_KEYS


def required_parameters(params_type: type) -> set[str]:
    """Parameters Stripe requires (the TypedDict's required keys)."""
    return set(getattr(params_type, "__required_keys__", set())) - REQUEST_OPTION_KEYS


def check_parameters(params: dict[str, Any], params_type: type) -> None:
    """Reject unknown top-level parameters and missing required ones, as Stripe does."""
    allowed = allowed_parameters(params_type)
    for name in sorted(params):
        if name not in allowed and name not in IGNORED_PARAMETERS:
            raise StripeError(
                400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name
            )
    for name in sorted(required_parameters(params_type)):
        if name not in params or params[name] in ("", None):
            raise StripeError(
                400, f"Missing required param: {name}.", code="parameter_missing", param=name
            )


def integer_param(params: dict[str, Any], name: str, default: int | None = None) -> int:
    """An integer parameter, or Stripe's ``parameter_invalid_integer`` error."""
    raw = params.get(name)
    if raw is None or raw == "":
        if default is None:
            raise StripeError(
                400, f"Missing required param: {name}.", code="parameter_missing", param=name
            )
        return default
    if not isinstance(raw, str) or not INTEGER.fullmatch(raw):
        raise StripeError(
            400,
            f"Invalid integer: {raw if isinstance(raw, str) else 'a hash'}",
            code="parameter_invalid_integer",
            param=name,
        )
    return int(raw)


def string_param(params: dict[str, Any], name: str) -> str | None:
    """A string parameter (None when absent), rejecting hashes."""
    raw = params.get(name)
    if raw is not None and not isinstance(raw, str):
        raise StripeError(
            400,
            f"Invalid string: {name} must be a string, not a hash.",
            code="parameter_invalid_string",
            param=name,
        )
    return raw


def hash_param(params: dict[str, Any], name: str) -> dict[str, Any]:
    """A hash parameter (``{}`` when absent), rejecting plain strings."""
    raw = params.get(name, {})
    if raw == "":
        return {}
    if not isinstance(raw, dict):
        raise StripeError(400, f"Invalid object: {name} must be a hash.", param=name)
    return raw


def new_id(prefix: str) -> str:
    """A Stripe-like object id: ``prefix_`` and 24 random hex digits."""
    return f"{prefix}_{secrets.token_hex(12)}"


def found(
    obj: dict[str, Any] | None, kind: str, object_id: str, param: str = "id"
) -> dict[str, Any]:
    """The object, or Stripe's ``resource_missing`` 404."""
    if obj is None:
        raise StripeError(
            404, f"No such {kind}: '{object_id}'", code="resource_missing", param=param
        )
    return obj


def create_app(store: LocalStripeStore, clock: Clock) -> Starlette:
    """The ASGI app: Stripe's routes over ``store``, with ``clock()`` as the server's time."""

    def authenticated(request: Request) -> str:
        header = request.headers.get("authorization", "")
        if not header:
            raise StripeError(
                401,
                "You did not provide an API key. Provide it in the Authorization header "
                "(Authorization: Bearer sk_test_...).",
            )
        key = header.removeprefix("Bearer ").strip()
        if not header.startswith("Bearer ") or not key.startswith("sk_test_") or len(key) < 9:
            raise StripeError(
                401,
                "Invalid API Key provided. The local Stripe accepts test secret keys "
                "(sk_test_...) only.",
                code="api_key_invalid",
            )
        return key

    def handler(action: Action, *, idempotent: bool) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            store.bump("requests")
            try:
                api_key = authenticated(request)
                if request.method == "GET":
                    params = parse_form(request.url.query.encode())
                else:
                    params = parse_form(await request.body())
                key = request.headers.get("idempotency-key") if idempotent else None
                if key is None:
                    return JSONResponse(await action(request, params), headers=request_id_header())
                return await idempotently(request, api_key, key, params, action)
            except StripeError as error:
                return error.response()

        return endpoint

    async def idempotently(
        request: Request, api_key: str, key: str, params: dict[str, Any], action: Action
    ) -> Response:
        """Stripe's rules: a key replays its first successful response for 24 hours, for the
        same parameters only. Requests that fail validation save nothing (they may be retried)."""
        if not key or len(key) > IDEMPOTENCY_KEY_MAX_LENGTH:
            raise StripeError(
                400,
                f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} characters.",
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

    def listing(
        request: Request, objects: list[dict[str, Any]], params: dict[str, Any]
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
                400, "You may only specify one of these parameters: starting_after, ending_before."
            )
        ids = [o["id"] for o in objects]
        for cursor, name in ((starting_after, "starting_after"), (ending_before, "ending_before")):
            if cursor and cursor not in ids:
                raise StripeError(
                    400, f"No such object: '{cursor}'", code="resource_missing", param=name
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

    # Customers ------------------------------------------------------------------------------

    async def create_customer(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, customer_params.CustomerCreateParams)
        metadata = hash_param(params, "metadata")
        customer = {
            "id": new_id("cus"),
            "object": "customer",
            "livemode": False,
            "created": clock(),
            "email": string_param(params, "email"),
            "name": string_param(params, "name"),
            "description": string_param(params, "description"),
            "currency": None,
            "metadata": metadata,
        }
        store.put(customer)
        return customer

    async def list_customers(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, customer_params.CustomerListParams)
        customers = store.list("customer")
        email = string_param(params, "email")
        if email:
            customers = [c for c in customers if c.get("email") == email]
        return listing(request, customers, params)

    async def get_customer(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, customer_params.CustomerRetrieveParams)
        customer_id = request.path_params["id"]
        return found(store.get("customer", customer_id), "customer", customer_id)

    # Meters ---------------------------------------------------------------------------------

    async def create_meter(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, billing_params.MeterCreateParams)
        formula = hash_param(params, "default_aggregation").get("formula")
        if formula not in FORMULAS:
            raise StripeError(
                400,
                f"Invalid default_aggregation[formula]: must be one of {', '.join(FORMULAS)}.",
                code="parameter_invalid_string",
                param="default_aggregation[formula]",
            )
        display_name = string_param(params, "display_name") or ""
        if len(display_name) > 250:
            raise StripeError(
                400, "display_name must be at most 250 characters.", param="display_name"
            )
        event_name = string_param(params, "event_name") or ""
        if len(event_name) > EVENT_NAME_MAX_LENGTH:
            raise StripeError(
                400,
                f"event_name must be at most {EVENT_NAME_MAX_LENGTH} characters.",
                param="event_name",
            )
        mapping = hash_param(params, "customer_mapping")
        if mapping and (mapping.get("type") != "by_id" or not mapping.get("event_payload_key")):
            raise StripeError(
                400,
                "customer_mapping needs type=by_id and an event_payload_key.",
                param="customer_mapping",
            )
        value_settings = hash_param(params, "value_settings")
        if value_settings and not value_settings.get("event_payload_key"):
            raise StripeError(
                400,
                "value_settings needs an event_payload_key.",
                code="parameter_missing",
                param="value_settings[event_payload_key]",
            )
        window = params.get("event_time_window")
        if window not in (None, "day", "hour"):
            raise StripeError(
                400, "event_time_window must be day or hour.", param="event_time_window"
            )
        with store.lock:
            if any(
                m["event_name"] == event_name and m["status"] == "active"
                for m in store.list("billing.meter")
            ):
                raise StripeError(
                    400,
                    f"An active meter with event_name '{event_name}' already exists.",
                    code="resource_already_exists",
                    param="event_name",
                )
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
                "default_aggregation": {"formula": formula},
                "customer_mapping": {
                    "event_payload_key": mapping.get("event_payload_key", "stripe_customer_id"),
                    "type": "by_id",
                },
                "value_settings": {
                    "event_payload_key": value_settings.get("event_payload_key", "value")
                },
                "event_time_window": window,
                "status_transitions": {"deactivated_at": None},
            }
            store.put(meter)
        return meter

    async def list_meters(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, billing_params.MeterListParams)
        meters = store.list("billing.meter")
        status = string_param(params, "status")
        if status:
            if status not in ("active", "inactive"):
                raise StripeError(400, "status must be active or inactive.", param="status")
            meters = [m for m in meters if m["status"] == status]
        return listing(request, meters, params)

    async def get_meter(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, billing_params.MeterRetrieveParams)
        meter_id = request.path_params["id"]
        return found(store.get("billing.meter", meter_id), "billing.meter", meter_id)

    # Meter events ---------------------------------------------------------------------------

    async def create_meter_event(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, billing_params.MeterEventCreateParams)
        event_name = string_param(params, "event_name") or ""
        payload = hash_param(params, "payload")
        if any(not isinstance(v, str) for v in payload.values()):
            raise StripeError(400, "payload values must be strings.", param="payload")
        meter = next(
            (
                m
                for m in store.list("billing.meter")
                if m["event_name"] == event_name and m["status"] == "active"
            ),
            None,
        )
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
        timestamp = integer_param(params, "timestamp", default=now)
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
        identifier = string_param(params, "identifier") or new_id("mev")
        if len(identifier) > IDENTIFIER_MAX_LENGTH:
            raise StripeError(
                400,
                f"identifier must be at most {IDENTIFIER_MAX_LENGTH} characters.",
                code="parameter_invalid_string",
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
        if not store.add_meter_event(event, customer_id, int(raw_value)):
            raise StripeError(
                400,
                f"An event already exists with identifier {identifier}.",
                code="duplicate_meter_event",
                param="identifier",
            )
        return event

    async def event_summaries(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, billing_params.MeterListEventSummariesParams)
        meter_id = request.path_params["id"]
        meter = found(store.get("billing.meter", meter_id), "billing.meter", meter_id)
        customer = string_param(params, "customer") or ""
        found(store.get("customer", customer), "customer", customer, "customer")
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
            if window not in GROUPING_WINDOWS:
                raise StripeError(
                    400, "value_grouping_window must be day or hour.", param="value_grouping_window"
                )
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
                "id": f"mtrusg_{meter_id.removeprefix('mtr_')}_{customer}_{window_start}",
                "object": "billing.meter_event_summary",
                "aggregated_value": store.meter_event_aggregate(
                    meter["event_name"], customer, window_start, window_start + step, formula
                ),
                "start_time": window_start,
                "end_time": window_start + step,
                "livemode": False,
                "meter": meter_id,
            }
            for window_start in range(start, end, step)
        ]
        summaries.reverse()  # newest window first, as Stripe lists
        return listing(request, summaries, params)

    # Test-only ------------------------------------------------------------------------------

    async def local_meter_events(request: Request) -> Response:
        return JSONResponse(store.meter_events())

    async def local_stats(request: Request) -> Response:
        return JSONResponse(
            {
                "customers": store.count("customer"),
                "meters": store.count("billing.meter"),
                "meter_events": store.meter_event_count(),
                "idempotent_replays": store.counter("idempotent_replays"),
                "requests": store.counter("requests"),
            }
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if status == 404:
            message = f"Unrecognized request URL ({request.method}: {request.url.path})."
        elif status == 405:
            message = f"Unsupported method {request.method} for {request.url.path}."
        else:
            message = "The local Stripe failed to handle the request."
        error_type = "api_error" if status >= 500 else "invalid_request_error"
        return StripeError(status, message, error_type=error_type).response()

    def route(path: str, get: Action | None = None, post: Action | None = None) -> list[Route]:
        routes = []
        if get is not None:
            routes.append(Route(path, handler(get, idempotent=False), methods=["GET"]))
        if post is not None:
            routes.append(Route(path, handler(post, idempotent=True), methods=["POST"]))
        return routes

    return Starlette(
        routes=[
            *route("/v1/customers", get=list_customers, post=create_customer),
            *route("/v1/customers/{id}", get=get_customer),
            *route("/v1/billing/meters", get=list_meters, post=create_meter),
            *route("/v1/billing/meters/{id}", get=get_meter),
            *route("/v1/billing/meters/{id}/event_summaries", get=event_summaries),
            *route("/v1/billing/meter_events", post=create_meter_event),
            Route("/_local/meter_events", local_meter_events, methods=["GET"]),
            Route("/_local/stats", local_stats, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error},
    )

"""A strict Stripe-compatible HTTP API for what Meterbook uses: customers, Billing Meters and
meter events, with Stripe's idempotency rules, parameter checks and error shapes."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import stripe.params as customer_params
import stripe.params.billing as billing_params
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from stripe_local.store import LocalStripeStore

Clock = Callable[[], int]
METER_EVENT_MAX_AGE_SECONDS = 35 * 24 * 3600
METER_EVENT_MAX_AHEAD_SECONDS = 5 * 60
IDEMPOTENCY_WINDOW_SECONDS = 24 * 3600
IGNORED_PARAMETERS = {"expand"}


class StripeError(Exception):
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
        self.status, self.message, self.code, self.param, self.type = (
            status,
            message,
            code,
            param,
            error_type,
        )

    def response(self) -> JSONResponse:
        error = {"type": self.type, "message": self.message}
        if self.code:
            error["code"] = self.code
        if self.param:
            error["param"] = self.param
        return JSONResponse({"error": error}, status_code=self.status)


def parse_form(body: bytes) -> dict[str, Any]:
    """Stripe's form encoding: ``a[b][c]=v`` and ``a[0]=v`` become nested dicts."""
    result: dict[str, Any] = {}
    for raw_key, value in parse_qsl(body.decode(), keep_blank_values=True):
        parts = raw_key.replace("]", "").split("[")
        target = result
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise StripeError(400, f"Invalid parameter nesting in {raw_key}.", param=raw_key)
        target[parts[-1]] = value
    return result


def allowed_parameters(params_type: type) -> set[str]:
    keys = set(getattr(params_type, "__required_keys__", set()))
    keys |= set(getattr(params_type, "__optional_keys__", set()))
    return keys - {"api_key", "idempotency_key", "stripe_account", "stripe_version", "headers"}


def check_parameters(params: dict[str, Any], params_type: type) -> None:
    allowed = allowed_parameters(params_type)
    for name in params:
        if name not in allowed and name not in IGNORED_PARAMETERS:
            raise StripeError(
                400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name
            )
    for name in getattr(params_type, "__required_keys__", set()):
        if name not in params:
            raise StripeError(
                400, f"Missing required param: {name}.", code="parameter_missing", param=name
            )


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def create_app(store: LocalStripeStore, clock: Clock) -> Starlette:
    def authenticated(request: Request) -> str:
        header = request.headers.get("authorization", "")
        key = header.removeprefix("Bearer ").strip()
        if not header.startswith("Bearer ") or not key.startswith("sk_test_"):
            raise StripeError(
                401,
                "Invalid API Key provided. The local Stripe accepts sk_test_ keys only.",
                error_type="invalid_request_error",
            )
        return key

    def handler(
        action: Callable[[Request, dict[str, Any]], Awaitable[dict[str, Any]]],
        *,
        idempotent: bool,
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            store.bump("requests")
            try:
                api_key = authenticated(request)
                if request.method == "GET":
                    params: dict[str, Any] = dict(request.query_params)
                else:
                    params = parse_form(await request.body())
                key = request.headers.get("idempotency-key") if idempotent else None
                if key is None:
                    return JSONResponse(await action(request, params))
                return await idempotently(request, api_key, key, params, action)
            except StripeError as error:
                return error.response()

        return endpoint

    async def idempotently(
        request: Request,
        api_key: str,
        key: str,
        params: dict[str, Any],
        action: Callable[[Request, dict[str, Any]], Awaitable[dict[str, Any]]],
    ) -> Response:
        if len(key) > 255:
            raise StripeError(400, "Idempotency-Key must be at most 255 characters.")
        fingerprint = hashlib.sha256(
            (request.url.path + json.dumps(params, sort_keys=True)).encode()
        ).hexdigest()
        with store.lock:
            saved = store.idempotent_response(api_key, key)
            if saved and clock() - saved[3] < IDEMPOTENCY_WINDOW_SECONDS:
                if saved[0] != fingerprint:
                    raise StripeError(
                        400,
                        "Keys for idempotent requests can only be used with the same parameters "
                        f"they were first used with. Try using a key other than '{key}'.",
                        error_type="idempotency_error",
                    )
                store.bump("idempotent_replays")
                return Response(
                    saved[2],
                    status_code=saved[1],
                    media_type="application/json",
                    headers={"Idempotent-Replayed": "true", "Idempotency-Key": key},
                )
            try:
                body, status = await action(request, params), 200
            except StripeError as error:
                if error.status >= 500:
                    raise
                status = error.status
                body = json.loads(error.response().body)
            encoded = json.dumps(body)
            store.save_idempotent_response(api_key, key, fingerprint, status, encoded, clock())
        return Response(
            encoded,
            status_code=status,
            media_type="application/json",
            headers={"Idempotency-Key": key},
        )

    def listing(request: Request, objects: list[dict[str, Any]], params: dict[str, Any]) -> dict:
        try:
            limit = int(params.get("limit", 10))
        except ValueError:
            raise StripeError(400, "limit must be an integer", param="limit") from None
        if not 1 <= limit <= 100:
            raise StripeError(400, "limit must be between 1 and 100", param="limit")
        starting_after = params.get("starting_after")
        if starting_after:
            ids = [o["id"] for o in objects]
            if starting_after not in ids:
                raise StripeError(
                    404,
                    f"No such object: '{starting_after}'",
                    code="resource_missing",
                    param="starting_after",
                )
            objects = objects[ids.index(starting_after) + 1 :]
        return {
            "object": "list",
            "url": request.url.path,
            "data": objects[:limit],
            "has_more": len(objects) > limit,
        }

    async def create_customer(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, customer_params.CustomerCreateParams)
        customer = {
            "id": new_id("cus"),
            "object": "customer",
            "livemode": False,
            "created": clock(),
            "email": params.get("email"),
            "name": params.get("name"),
            "currency": None,
            "metadata": params.get("metadata", {}),
        }
        store.put(customer)
        return customer

    async def list_customers(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        return listing(request, store.list("customer"), params)

    async def get_customer(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        return found(store.get("customer", request.path_params["id"]), request.path_params["id"])

    async def create_meter(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, billing_params.MeterCreateParams)
        formula = (params.get("default_aggregation") or {}).get("formula")
        if formula not in ("sum", "count", "last"):
            raise StripeError(
                400,
                "default_aggregation[formula] must be sum, count or last.",
                param="default_aggregation[formula]",
            )
        event_name = params["event_name"]
        if not event_name or len(event_name) > 100:
            raise StripeError(400, "event_name must be 1 to 100 characters.", param="event_name")
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
        mapping = params.get("customer_mapping") or {}
        if mapping and mapping.get("type") != "by_id":
            raise StripeError(
                400, "customer_mapping[type] must be by_id.", param="customer_mapping[type]"
            )
        meter = {
            "id": new_id("mtr"),
            "object": "billing.meter",
            "livemode": False,
            "created": clock(),
            "updated": clock(),
            "display_name": params["display_name"],
            "event_name": event_name,
            "status": "active",
            "default_aggregation": {"formula": formula},
            "customer_mapping": {
                "event_payload_key": mapping.get("event_payload_key", "stripe_customer_id"),
                "type": "by_id",
            },
            "value_settings": {
                "event_payload_key": (params.get("value_settings") or {}).get(
                    "event_payload_key", "value"
                )
            },
            "event_time_window": None,
            "status_transitions": {"deactivated_at": None},
        }
        store.put(meter)
        return meter

    async def list_meters(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        return listing(request, store.list("billing.meter"), params)

    async def get_meter(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        return found(
            store.get("billing.meter", request.path_params["id"]), request.path_params["id"]
        )

    async def create_meter_event(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, billing_params.MeterEventCreateParams)
        event_name = params["event_name"]
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
        payload = params["payload"]
        if not isinstance(payload, dict):
            raise StripeError(400, "payload must be a hash.", param="payload")
        customer_key = meter["customer_mapping"]["event_payload_key"]
        value_key = meter["value_settings"]["event_payload_key"]
        customer_id = payload.get(customer_key)
        if not customer_id or store.get("customer", customer_id) is None:
            raise StripeError(
                400,
                f"No such customer: '{customer_id}'",
                code="resource_missing",
                param=f"payload[{customer_key}]",
            )
        raw_value = payload.get(value_key)
        try:
            value = int(str(raw_value))
        except ValueError:
            raise StripeError(
                400,
                f"payload[{value_key}] must be a whole number, not {raw_value!r}.",
                param=f"payload[{value_key}]",
            ) from None
        now = clock()
        timestamp = int(params.get("timestamp") or now)
        if timestamp < now - METER_EVENT_MAX_AGE_SECONDS:
            raise StripeError(
                400,
                "timestamp must be within the past 35 calendar days.",
                code="timestamp_too_far_in_past",
                param="timestamp",
            )
        if timestamp > now + METER_EVENT_MAX_AHEAD_SECONDS:
            raise StripeError(
                400,
                "timestamp must be at most 5 minutes in the future.",
                code="timestamp_in_future",
                param="timestamp",
            )
        identifier = params.get("identifier") or new_id("mev")
        if len(identifier) > 100:
            raise StripeError(400, "identifier must be at most 100 characters.", param="identifier")
        event = {
            "object": "billing.meter_event",
            "livemode": False,
            "created": now,
            "event_name": event_name,
            "identifier": identifier,
            "payload": payload,
            "timestamp": timestamp,
        }
        if not store.add_meter_event(event, customer_id, value):
            raise StripeError(
                400,
                f"A meter event with identifier '{identifier}' already exists.",
                code="resource_already_exists",
                param="identifier",
            )
        return event

    async def event_summaries(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        meter = found(
            store.get("billing.meter", request.path_params["id"]), request.path_params["id"]
        )
        for name in ("customer", "start_time", "end_time"):
            if name not in params:
                raise StripeError(
                    400, f"Missing required param: {name}.", code="parameter_missing", param=name
                )
        start, end = int(params["start_time"]), int(params["end_time"])
        total = store.meter_event_sum(meter["event_name"], params["customer"], start, end)
        summary = {
            "id": f"mtrusg_{meter['id']}_{start}",
            "object": "billing.meter_event_summary",
            "aggregated_value": total,
            "start_time": start,
            "end_time": end,
            "livemode": False,
            "meter": meter["id"],
        }
        return listing(request, [summary], params)

    async def local_meter_events(request: Request) -> Response:
        return JSONResponse(store.meter_events())

    async def local_stats(request: Request) -> Response:
        return JSONResponse(
            {
                "customers": store.count("customer"),
                "meters": store.count("billing.meter"),
                "meter_events": len(store.meter_events()),
                "idempotent_replays": store.counter("idempotent_replays"),
                "requests": store.counter("requests"),
            }
        )

    return Starlette(
        routes=[
            Route("/v1/customers", handler(create_customer, idempotent=True), methods=["POST"]),
            Route("/v1/customers", handler(list_customers, idempotent=False), methods=["GET"]),
            Route("/v1/customers/{id}", handler(get_customer, idempotent=False), methods=["GET"]),
            Route("/v1/billing/meters", handler(create_meter, idempotent=True), methods=["POST"]),
            Route("/v1/billing/meters", handler(list_meters, idempotent=False), methods=["GET"]),
            Route("/v1/billing/meters/{id}", handler(get_meter, idempotent=False), methods=["GET"]),
            Route(
                "/v1/billing/meters/{id}/event_summaries",
                handler(event_summaries, idempotent=False),
                methods=["GET"],
            ),
            Route(
                "/v1/billing/meter_events",
                handler(create_meter_event, idempotent=True),
                methods=["POST"],
            ),
            Route("/_local/meter_events", local_meter_events, methods=["GET"]),
            Route("/_local/stats", local_stats, methods=["GET"]),
        ]
    )


def found(obj: dict[str, Any] | None, object_id: str) -> dict[str, Any]:
    if obj is None:
        raise StripeError(
            404, f"No such object: '{object_id}'", code="resource_missing", param="id"
        )
    return obj

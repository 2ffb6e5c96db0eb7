"""The billing API as an ASGI app: ``create_app(config)``; ``meterbook serve`` runs it on uvicorn.

Routes are ``def`` functions: FastAPI runs them in its worker threads, each with a connection
from a bounded pool, because the ledger's client (psycopg) is synchronous.
"""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations, and the
# role dependencies are defined inside ``create_app``, where string annotations cannot be found.
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import date, datetime
from typing import Annotated, Any

import psycopg
from fastapi import Depends, FastAPI, Header, Path, Query, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer

from api import store
from api.auth import Principal, Role, principal_of
from api.config import ApiConfig
from api.db import ConnectionPool
from api.errors import ApiError, install_error_handlers, request_id_of
from api.middleware import RequestGuard
from api.models import (
    Adjustment,
    AdjustmentRequest,
    CreditGrant,
    CreditGrantRequest,
    ErrorBody,
    LedgerPage,
)
from api.operations import (
    FINANCE_ROLES,
    GRANT_ROLES,
    READ_ROLES,
    BillingOperations,
    require_role,
)
from api.writes import RequestContext, WriteResult, check_idempotency_key
from ledger.migrations import migrate

CUSTOMER_ID_PATTERN = r"^[A-Za-z0-9_-]{1,100}$"
DEFAULT_PAGE_SIZE = 100
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (401, "No token, or not a valid one"),
        (403, "The token's role may not do this"),
        (404, "Unknown customer (or grant)"),
        (413, "Body larger than the limit"),
        (422, "Invalid request"),
    )
}
WRITE_ERRORS = ERRORS | {
    400: {"model": ErrorBody, "description": "No Idempotency-Key header"},
    409: {"model": ErrorBody, "description": "The Idempotency-Key was used for another request"},
}

CustomerId = Annotated[str, Path(pattern=CUSTOMER_ID_PATTERN, examples=["cus_0001"])]
_bearer = HTTPBearer(auto_error=False, description="A token from METERBOOK_API_TOKENS")


def create_app(config: ApiConfig) -> FastAPI:
    pool = ConnectionPool(config.ledger_url, size=config.pool_size)
    operations = BillingOperations(config, pool.connection)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with psycopg.connect(config.ledger_url, autocommit=True) as conn:
            migrate(conn)
            store.ensure_schema(conn)
            if config.stripe_webhook_secret:
                from stripe_sync.webhooks import ensure_schema as ensure_webhook_schema

                ensure_webhook_schema(conn)
        yield
        pool.close()

    app = FastAPI(
        title="Meterbook billing API",
        version="1",
        description=(
            "Customers' ledgers, credits and adjustments. Amounts are strings of decimal "
            'minor units (cents). Every error is `{"error": {"code", "message", '
            '"request_id"}}`. See docs/api.md.'
        ),
        lifespan=lifespan,
    )
    install_error_handlers(app)

    def allow(*roles: Role) -> Callable[..., Principal]:
        def dependency(
            request: Request,
            authorization: Annotated[str | None, Header()] = None,
            _: Annotated[object, Security(_bearer)] = None,
        ) -> Principal:
            principal = principal_of(authorization, config.principals)
            require_role(principal, roles, f"{request.method} {request.url.path}")
            return principal

        return dependency

    Reader = Annotated[Principal, Depends(allow(*READ_ROLES))]
    Granter = Annotated[Principal, Depends(allow(*GRANT_ROLES))]
    Finance = Annotated[Principal, Depends(allow(*FINANCE_ROLES))]
    IdempotencyKey = Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Required. A replay returns the first response; the same key with "
            "another body is a 409.",
        ),
    ]

    def context_of(request: Request, principal: Principal, key: str | None) -> RequestContext:
        return RequestContext(
            principal=principal,
            request_id=request_id_of(request),
            method=request.method,
            path=request.url.path,
            idempotency_key=check_idempotency_key(key),
        )

    def respond(result: WriteResult) -> JSONResponse:
        headers = {"Idempotent-Replayed": "true"} if result.replayed else {}
        return JSONResponse(result.body, status_code=result.status_code, headers=headers)

    @app.get("/health", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/customers/{customer_id}/ledger",
        response_model=LedgerPage,
        responses=ERRORS,
        summary="The customer's ledger transactions, with their causes",
    )
    def customer_ledger(
        customer_id: CustomerId,
        principal: Reader,
        start: Annotated[
            datetime | None, Query(alias="from", description="Effective at or after (ISO 8601)")
        ] = None,
        end: Annotated[
            datetime | None, Query(alias="to", description="Effective before (ISO 8601)")
        ] = None,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=store.MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    ) -> JSONResponse:
        return JSONResponse(
            operations.ledger_page(customer_id, start=start, end=end, cursor=cursor, limit=limit)
        )

    @app.get(
        "/customers/{customer_id}/credits",
        response_model=list[CreditGrant],
        responses=ERRORS,
        summary="The customer's credit grants, pending and approved",
    )
    def customer_credits(customer_id: CustomerId, principal: Reader) -> JSONResponse:
        return JSONResponse(operations.credits(customer_id))

    @app.post(
        "/customers/{customer_id}/credits",
        status_code=201,
        response_model=CreditGrant,
        responses=WRITE_ERRORS,
        summary="Grant a credit (over the approval threshold: pending a second approver)",
    )
    def create_credit(
        customer_id: CustomerId,
        body: CreditGrantRequest,
        request: Request,
        principal: Granter,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        context = context_of(request, principal, idempotency_key)
        return respond(operations.grant_credit(context, customer_id, body))

    @app.post(
        "/customers/{customer_id}/credits/{grant_id}/approve",
        response_model=CreditGrant,
        responses=ERRORS | {409: {"model": ErrorBody, "description": "The ledger refused"}},
        summary="Approve a pending grant (finance, not its requester): posts it to the ledger",
    )
    def approve_credit(
        customer_id: CustomerId,
        grant_id: Annotated[str, Path(max_length=255)],
        request: Request,
        principal: Finance,
    ) -> JSONResponse:
        result = operations.approve_credit(principal, request_id_of(request), customer_id, grant_id)
        return JSONResponse(result.body, status_code=result.status_code)

    @app.post(
        "/customers/{customer_id}/adjustments",
        status_code=201,
        response_model=Adjustment,
        responses=WRITE_ERRORS,
        summary="Correct what a customer owes with new ledger entries (finance)",
    )
    def create_adjustment(
        customer_id: CustomerId,
        body: AdjustmentRequest,
        request: Request,
        principal: Finance,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        context = context_of(request, principal, idempotency_key)
        return respond(operations.adjust(context, customer_id, body))

    @app.get(
        "/customers/{customer_id}",
        responses=ERRORS,
        summary="The customer's state: balances, credits, invoices, plan, usage to date",
    )
    def customer(
        customer_id: CustomerId,
        principal: Reader,
        period: Annotated[
            str | None,
            Query(
                pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$",
                description="Billing period (YYYY-MM) of the usage figures; default: this month",
            ),
        ] = None,
    ) -> JSONResponse:
        return JSONResponse(operations.customer_state(customer_id, period))

    @app.get(
        "/explain",
        responses=ERRORS | {503: {"model": ErrorBody, "description": "No snapshot yet"}},
        summary="Trace a billed amount back to raw events, or a raw event forward",
    )
    def explain(
        principal: Reader,
        customer: Annotated[str | None, Query(pattern=CUSTOMER_ID_PATTERN)] = None,
        metric: Annotated[str | None, Query(max_length=100)] = None,
        day: Annotated[date | None, Query()] = None,
        event_id: Annotated[str | None, Query(max_length=255)] = None,
    ) -> JSONResponse:
        if event_id is not None:
            return JSONResponse(operations.explain_event(event_id))
        if customer is None or metric is None or day is None:
            raise ApiError(
                422,
                "invalid_request",
                "Give customer, metric and day (a billed amount), or event_id (a raw event).",
            )
        return JSONResponse(operations.explain_slot(customer, metric, day))

    @app.get(
        "/anomalies",
        responses=ERRORS | {503: {"model": ErrorBody, "description": "No snapshot yet"}},
        summary="Anomaly and reconciliation findings, newest first",
    )
    def anomalies(
        principal: Reader,
        since: Annotated[date | None, Query(description="Findings of this day or later")] = None,
        limit: Annotated[int, Query(ge=1, le=store.MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    ) -> JSONResponse:
        return JSONResponse(operations.anomalies(since, limit))

    if config.stripe_webhook_secret:
        from stripe_sync.webhooks import create_webhook_app

        # The receiver's own route (/stripe/webhooks): Stripe's signature, not a bearer token,
        # authenticates it.
        receiver = create_webhook_app(config.ledger_url, config.stripe_webhook_secret)
        app.router.routes.extend(receiver.routes)

    app.add_middleware(
        RequestGuard,
        max_body_bytes=config.max_body_bytes,
        larger_limits=[("/stripe/webhooks", config.max_webhook_body_bytes)],
    )
    return app

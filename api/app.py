"""The billing API as an ASGI app: ``create_app(config)``; ``meterbook serve`` runs it on uvicorn.

Routes are ``def`` functions: FastAPI runs them in its worker threads, each with a connection
from a bounded pool, because the ledger's client (psycopg) is synchronous.
"""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations, and the
# role dependencies are defined inside ``create_app``, where string annotations cannot be found.
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, date, datetime
from typing import Annotated, Any

import psycopg
from fastapi import Depends, FastAPI, Header, Path, Query, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer

from api import store, views
from api.auth import Principal, Role, principal_of
from api.config import ApiConfig
from api.customers import CustomerDirectory
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
    LedgerTransaction,
)
from api.snapshot import Snapshot, SnapshotUnavailable, open_snapshot
from api.writes import (
    IDEMPOTENCY_KEY_PATTERN,
    RequestContext,
    WriteResult,
    approve_grant,
    grant_credit,
    post_adjustment,
)
from ledger.migrations import migrate

CUSTOMER_ID_PATTERN = r"^[A-Za-z0-9_-]{1,100}$"
DEFAULT_PAGE_SIZE = 100
READ_ROLES = (Role.VIEWER, Role.SUPPORT, Role.FINANCE)
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
    customers = CustomerDirectory(config.customers_csv)

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
            if principal.role not in roles:
                raise ApiError(
                    403,
                    "forbidden",
                    f"The {principal.role.value} role may not {request.method} "
                    f"{request.url.path}; it needs one of: {', '.join(r.value for r in roles)}.",
                )
            return principal

        return dependency

    Reader = Annotated[Principal, Depends(allow(*READ_ROLES))]
    Granter = Annotated[Principal, Depends(allow(Role.SUPPORT, Role.FINANCE))]
    Finance = Annotated[Principal, Depends(allow(Role.FINANCE))]
    IdempotencyKey = Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Required. A replay returns the first response; the same key with "
            "another body is a 409.",
        ),
    ]

    def context_of(request: Request, principal: Principal, key: str | None) -> RequestContext:
        if key is None:
            raise ApiError(
                400,
                "idempotency_key_required",
                "Send an Idempotency-Key header (a unique string per intended write, reused "
                "only to retry that write).",
            )
        if not re.match(IDEMPOTENCY_KEY_PATTERN, key):
            raise ApiError(
                422,
                "invalid_idempotency_key",
                "The Idempotency-Key must be 1-200 letters, digits or ._:- characters.",
            )
        return RequestContext(
            principal=principal,
            request_id=request_id_of(request),
            method=request.method,
            path=request.url.path,
            idempotency_key=key,
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
        customers.currency_of(customer_id)
        for name, moment in (("from", start), ("to", end)):
            if moment is not None and moment.utcoffset() is None:
                raise ApiError(422, "invalid_request", f"{name} needs a time zone (e.g. Z).")
        with pool.connection() as conn:
            as_of, page, following = store.ledger_page(
                conn,
                customer_id=customer_id,
                start=start,
                end=end,
                after=store.decode_cursor(cursor) if cursor else None,
                limit=limit,
            )
        body = LedgerPage(
            customer_id=customer_id,
            as_of=as_of,
            transactions=[LedgerTransaction.model_validate(t) for t in page],
            next_cursor=store.encode_cursor(*following) if following else None,
        )
        return JSONResponse(body.model_dump(mode="json"))

    @app.get(
        "/customers/{customer_id}/credits",
        response_model=list[CreditGrant],
        responses=ERRORS,
        summary="The customer's credit grants, pending and approved",
    )
    def customer_credits(customer_id: CustomerId, principal: Reader) -> JSONResponse:
        customers.currency_of(customer_id)
        with pool.connection() as conn:
            grants = store.customer_grants(conn, customer_id)
        return JSONResponse(
            [CreditGrant.model_validate(grant).model_dump(mode="json") for grant in grants]
        )

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
        currency = customers.currency_of(customer_id)
        with pool.connection() as conn:
            result = grant_credit(
                conn,
                config,
                context,
                customer_id=customer_id,
                customer_currency=currency,
                request=body,
                now=datetime.now(UTC),
            )
        return respond(result)

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
        customers.currency_of(customer_id)
        with pool.connection() as conn:
            result = approve_grant(
                conn,
                config,
                principal=principal,
                request_id=request_id_of(request),
                customer_id=customer_id,
                grant_id=grant_id,
                now=datetime.now(UTC),
            )
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
        currency = customers.currency_of(customer_id)
        with pool.connection() as conn:
            result = post_adjustment(
                conn,
                config,
                context,
                customer_id=customer_id,
                customer_currency=currency,
                request=body,
                now=datetime.now(UTC),
            )
        return respond(result)

    @contextmanager
    def snapshot() -> Iterator[Snapshot]:
        if config.snapshot_dir is None:
            raise ApiError(503, "snapshot_unavailable", "No warehouse snapshot is configured.")
        try:
            with open_snapshot(config.snapshot_dir) as published:
                yield published
        except SnapshotUnavailable as error:
            raise ApiError(503, "snapshot_unavailable", str(error)) from error

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
        currency = customers.currency_of(customer_id)
        in_period = date.fromisoformat(f"{period}-01") if period else datetime.now(UTC).date()
        with pool.connection() as conn:
            ledger = views.ledger_state(conn, customer_id)
            subscriptions = views.subscription_state(conn, customer_id)
        try:
            with snapshot() as published:
                warehouse: dict[str, Any] = views.warehouse_state(published, customer_id, in_period)
        except ApiError as error:
            warehouse = {"available": False, "message": error.message}
        body = {
            "customer_id": customer_id,
            "currency": currency,
            "ledger": ledger,
            "subscriptions": subscriptions,
            "warehouse": warehouse,
            "not_built": views.NOT_BUILT,
        }
        return JSONResponse(views.jsonable(body))

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
            with snapshot() as published:
                return JSONResponse(views.jsonable(views.explain_event(published, event_id)))
        if customer is None or metric is None or day is None:
            raise ApiError(
                422,
                "invalid_request",
                "Give customer, metric and day (a billed amount), or event_id (a raw event).",
            )
        customers.currency_of(customer)
        with pool.connection() as conn, snapshot() as published:
            body = views.explain_slot(
                conn, published, customer_id=customer, meter_id=metric, day=day
            )
        return JSONResponse(views.jsonable(body))

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
        with snapshot() as published:
            return JSONResponse(views.jsonable(views.anomalies(published, since, limit)))

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

"""What the billing API does, once: the HTTP routes (``api/app.py``) and the support commands
of the CLI (``api/support_cli.py``) both call these, so a credit granted from a terminal is
checked, audited and replayed exactly like one granted over HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, date, datetime
from typing import Any

import psycopg

from api import store, views
from api.auth import Principal, Role
from api.config import ApiConfig
from api.customers import CustomerDirectory
from api.errors import ApiError
from api.models import (
    AdjustmentRequest,
    CreditGrant,
    CreditGrantRequest,
    LedgerPage,
    LedgerTransaction,
)
from api.snapshot import Snapshot, SnapshotUnavailable, open_snapshot
from api.writes import RequestContext, WriteResult, approve_grant, grant_credit, post_adjustment

READ_ROLES = (Role.VIEWER, Role.SUPPORT, Role.FINANCE)
GRANT_ROLES = (Role.SUPPORT, Role.FINANCE)
FINANCE_ROLES = (Role.FINANCE,)

Connect = Callable[[], AbstractContextManager[psycopg.Connection]]


def require_role(principal: Principal, roles: tuple[Role, ...], action: str) -> None:
    """A 403 unless the principal's role is one of ``roles``; ``action`` says what was tried."""
    if principal.role not in roles:
        raise ApiError(
            403,
            "forbidden",
            f"The {principal.role.value} role may not {action}; it needs one of: "
            f"{', '.join(r.value for r in roles)}.",
        )


class BillingOperations:
    """The operations over one ledger connection source and one warehouse snapshot root."""

    def __init__(self, config: ApiConfig, connect: Connect) -> None:
        self.config = config
        self.customers = CustomerDirectory(config.customers_csv)
        self._connect = connect

    # --- reads ---------------------------------------------------------------------------------

    def customer_state(self, customer_id: str, period: str | None) -> dict[str, Any]:
        """Ledger balances, credits, invoices and dunning (live); plan, usage and allowances
        (as of the last published snapshot). ``period`` is YYYY-MM: the customer's billing
        period that begins in that month; default: the one running today."""
        currency = self.customers.currency_of(customer_id)
        month = date.fromisoformat(f"{period}-01") if period else None
        with self._connect() as conn:
            ledger = views.ledger_state(conn, customer_id)
            subscriptions = views.subscription_state(conn, customer_id)
        try:
            with self.snapshot() as published:
                warehouse: dict[str, Any] = views.warehouse_state(
                    published, customer_id, datetime.now(UTC).date(), beginning_in=month
                )
        except ApiError as error:
            warehouse = {"available": False, "message": error.message}
        return views.jsonable(
            {
                "customer_id": customer_id,
                "currency": currency,
                "ledger": ledger,
                "subscriptions": subscriptions,
                "warehouse": warehouse,
                "not_built": views.NOT_BUILT,
            }
        )

    def ledger_page(
        self,
        customer_id: str,
        *,
        start: datetime | None,
        end: datetime | None,
        cursor: str | None,
        limit: int,
    ) -> dict[str, Any]:
        self.customers.currency_of(customer_id)
        for name, moment in (("from", start), ("to", end)):
            if moment is not None and moment.utcoffset() is None:
                raise ApiError(422, "invalid_request", f"{name} needs a time zone (e.g. Z).")
        with self._connect() as conn:
            as_of, page, following = store.ledger_page(
                conn,
                customer_id=customer_id,
                start=start,
                end=end,
                after=store.decode_cursor(cursor) if cursor else None,
                limit=limit,
            )
        return LedgerPage(
            customer_id=customer_id,
            as_of=as_of,
            transactions=[LedgerTransaction.model_validate(t) for t in page],
            next_cursor=store.encode_cursor(*following) if following else None,
        ).model_dump(mode="json")

    def credits(self, customer_id: str) -> list[dict[str, Any]]:
        self.customers.currency_of(customer_id)
        with self._connect() as conn:
            grants = store.customer_grants(conn, customer_id)
        return [CreditGrant.model_validate(grant).model_dump(mode="json") for grant in grants]

    def explain_slot(self, customer_id: str, meter_id: str, day: date) -> dict[str, Any]:
        self.customers.currency_of(customer_id)
        with self._connect() as conn, self.snapshot() as published:
            body = views.explain_slot(
                conn, published, customer_id=customer_id, meter_id=meter_id, day=day
            )
        return views.jsonable(body)

    def explain_event(self, event_id: str) -> dict[str, Any]:
        with self.snapshot() as published:
            return views.jsonable(views.explain_event(published, event_id))

    def anomalies(self, since: date | None, limit: int) -> dict[str, Any]:
        with self.snapshot() as published:
            return views.jsonable(views.anomalies(published, since, limit))

    @contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        if self.config.snapshot_dir is None:
            raise ApiError(503, "snapshot_unavailable", "No warehouse snapshot is configured.")
        try:
            with open_snapshot(self.config.snapshot_dir) as published:
                yield published
        except SnapshotUnavailable as error:
            raise ApiError(503, "snapshot_unavailable", str(error)) from error

    # --- writes (each in one ledger transaction, audited) --------------------------------------

    def grant_credit(
        self, context: RequestContext, customer_id: str, request: CreditGrantRequest
    ) -> WriteResult:
        require_role(context.principal, GRANT_ROLES, "grant credits")
        currency = self.customers.currency_of(customer_id)
        with self._connect() as conn:
            return grant_credit(
                conn,
                self.config,
                context,
                customer_id=customer_id,
                customer_currency=currency,
                request=request,
                now=datetime.now(UTC),
            )

    def approve_credit(
        self, principal: Principal, request_id: str, customer_id: str, grant_id: str
    ) -> WriteResult:
        require_role(principal, FINANCE_ROLES, "approve credit grants")
        self.customers.currency_of(customer_id)
        with self._connect() as conn:
            return approve_grant(
                conn,
                self.config,
                principal=principal,
                request_id=request_id,
                customer_id=customer_id,
                grant_id=grant_id,
                now=datetime.now(UTC),
            )

    def adjust(
        self, context: RequestContext, customer_id: str, request: AdjustmentRequest
    ) -> WriteResult:
        require_role(context.principal, FINANCE_ROLES, "post adjustments")
        currency = self.customers.currency_of(customer_id)
        with self._connect() as conn:
            return post_adjustment(
                conn,
                self.config,
                context,
                customer_id=customer_id,
                customer_currency=currency,
                request=request,
                now=datetime.now(UTC),
            )

"""The billing API's operations as ``meterbook`` commands, for support and finance at a terminal:
``customer show|ledger``, ``credits list|grant|approve``, ``adjust``, ``anomalies``.

They run the same operations as the HTTP routes (``api/operations.py``) with the same checks:
the caller is the holder of the token in ``METERBOOK_API_TOKEN`` (one of ``METERBOOK_API_TOKENS``),
with that token's role and limits, and every write is audited under its name and carries an
Idempotency-Key (printed, so a write that may not have happened can be retried safely).
Output is JSON, the body the API would answer."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from typing import Annotated, Any

import typer

customer_app = typer.Typer(help="A customer's state and ledger.", no_args_is_help=True)
credits_app = typer.Typer(help="A customer's credit grants.", no_args_is_help=True)

CustomerArgument = Annotated[str, typer.Argument(help="Customer id, e.g. cus_0001.")]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--idempotency-key",
        help="Retry a write with the key it printed; default: a new key (a new write).",
    ),
]


@contextmanager
def _session(*, writes: bool) -> Iterator[tuple[Any, Any]]:
    """The operations over this data directory's ledger and snapshot, and the caller: the
    holder of ``METERBOOK_API_TOKEN``, which writes need (they act in someone's name); reads
    need none (whoever can run this can read the data directory anyway)."""
    import psycopg

    from api import store
    from api.auth import AuthenticationError, principal_of
    from api.cli import _ledger_url
    from api.config import config_from_env
    from api.operations import BillingOperations
    from ledger.migrations import migrate
    from orchestration.settings import get_settings

    settings = get_settings()
    try:
        config = config_from_env(settings, _ledger_url(settings))
    except ValueError as error:
        _fail(str(error), code=2)
    token = os.environ.get("METERBOOK_API_TOKEN", "")
    principal = None
    if writes or token:
        try:
            principal = principal_of(f"Bearer {token}" if token else None, config.principals)
        except AuthenticationError as error:
            _fail(
                f"{error.message} Writes act in someone's name: set METERBOOK_API_TOKEN to your "
                "token (`meterbook api token` makes one; its entry goes in "
                "METERBOOK_API_TOKENS).",
                code=2,
            )
    migrated: list[bool] = []

    @contextmanager
    def connect() -> Iterator[psycopg.Connection]:
        with psycopg.connect(config.ledger_url, autocommit=True) as conn:
            if not migrated:  # the first use, as the server's start-up does
                migrate(conn)
                store.ensure_schema(conn)
                migrated.append(True)
            yield conn

    yield BillingOperations(config, connect), principal


def _fail(message: str, *, code: int = 1) -> Any:
    typer.echo(message, err=True)
    raise typer.Exit(code)


def _run(action: Callable[[Any, Any], Any], *, writes: bool = False) -> None:
    """Run one operation and print its JSON; a refusal prints the API's error shape and exits 1."""
    from api.errors import ApiError, error_body

    request_id = f"cli_{uuid.uuid4().hex[:16]}"
    try:
        with _session(writes=writes) as (operations, principal):
            result = action(operations, _Caller(principal, request_id))
    except ApiError as error:
        typer.echo(json.dumps(error_body(error.code, error.message, request_id)), err=True)
        raise typer.Exit(1) from None
    body = getattr(result, "body", result)
    typer.echo(json.dumps(body, indent=2))


class _Caller:
    def __init__(self, principal: Any, request_id: str) -> None:
        self.principal = principal
        self.request_id = request_id

    def context(self, method: str, path: str, key: str | None) -> Any:
        """The write's context; the same method and path as over HTTP, so a key used by one
        is a replay (or a conflict) for the other."""
        from api.writes import RequestContext, check_idempotency_key

        key = key or f"cli-{uuid.uuid4().hex}"
        typer.echo(f"Idempotency-Key: {key} (pass --idempotency-key {key} to retry)", err=True)
        return RequestContext(
            principal=self.principal,
            request_id=self.request_id,
            method=method,
            path=path,
            idempotency_key=check_idempotency_key(key),
        )


@customer_app.command("show")
def customer_show(
    customer_id: CustomerArgument,
    period: Annotated[str | None, typer.Option(help="Billing period YYYY-MM.")] = None,
) -> None:
    """Balances, credits, open invoices and dunning, plan, usage and allowances to date."""

    def show(operations: Any, caller: _Caller) -> Any:
        return operations.customer_state(customer_id, period)

    _run(show)


@customer_app.command("ledger")
def customer_ledger(
    customer_id: CustomerArgument,
    start: Annotated[
        datetime | None, typer.Option("--from", help="Effective at or after (UTC).")
    ] = None,
    end: Annotated[datetime | None, typer.Option("--to", help="Effective before (UTC).")] = None,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of the last page.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
) -> None:
    """The customer's ledger transactions with their causes, oldest first."""
    from datetime import UTC

    def page(operations: Any, caller: _Caller) -> Any:
        return operations.ledger_page(
            customer_id,
            start=start.replace(tzinfo=UTC) if start and start.tzinfo is None else start,
            end=end.replace(tzinfo=UTC) if end and end.tzinfo is None else end,
            cursor=cursor,
            limit=limit,
        )

    _run(page)


@credits_app.command("list")
def credits_list(customer_id: CustomerArgument) -> None:
    """The customer's grants, pending and approved."""

    def listed(operations: Any, caller: _Caller) -> Any:
        return operations.credits(customer_id)

    _run(listed)


@credits_app.command("grant")
def credits_grant(
    customer_id: CustomerArgument,
    amount: Annotated[str, typer.Option(help="Minor units (cents) as a decimal, e.g. 500.")],
    currency: Annotated[str, typer.Option(help="e.g. usd.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit log).")],
    kind: Annotated[str, typer.Option(help="promotional or prepaid.")] = "promotional",
    expires_at: Annotated[
        datetime | None, typer.Option(help="When it expires (UTC), e.g. 2026-12-31.")
    ] = None,
    priority: Annotated[int, typer.Option(help="Lower is spent first.")] = 100,
    metric: Annotated[
        list[str] | None, typer.Option(help="A meter it pays for (repeat); default: all.")
    ] = None,
    idempotency_key: KeyOption = None,
) -> None:
    """Grant a credit: posted at once, or pending a second (finance) approver over the
    threshold."""
    from datetime import UTC

    from pydantic import ValidationError

    from api.models import CreditGrantRequest

    body: dict[str, Any] = {
        "amount_minor": amount,
        "currency": currency,
        "reason": reason,
        "kind": kind,
        "priority": priority,
        "metrics": metric or [],
    }
    if expires_at is not None:
        body["expires_at"] = expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)
    try:
        request = CreditGrantRequest.model_validate(body)
    except ValidationError as error:
        _fail(_validation_message(error))

    def grant(operations: Any, caller: _Caller) -> Any:
        path = f"/customers/{customer_id}/credits"
        return operations.grant_credit(
            caller.context("POST", path, idempotency_key), customer_id, request
        )

    _run(grant, writes=True)


@credits_app.command("approve")
def credits_approve(
    customer_id: CustomerArgument,
    grant_id: Annotated[str, typer.Argument(help="The pending grant's id.")],
) -> None:
    """Approve a pending grant (finance, not its requester): posts it to the ledger."""

    def approve(operations: Any, caller: _Caller) -> Any:
        return operations.approve_credit(caller.principal, caller.request_id, customer_id, grant_id)

    _run(approve, writes=True)


def adjust(
    customer_id: CustomerArgument,
    amount: Annotated[str, typer.Option(help="Minor units (cents) as a decimal, e.g. 250.")],
    currency: Annotated[str, typer.Option(help="e.g. usd.")],
    direction: Annotated[str, typer.Option(help="lower_receivable or raise_receivable.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit log).")],
    idempotency_key: KeyOption = None,
) -> None:
    """Correct what a customer owes with new ledger entries (finance); never an edit."""
    from pydantic import ValidationError

    from api.models import AdjustmentRequest

    try:
        request = AdjustmentRequest.model_validate(
            {"amount_minor": amount, "currency": currency, "direction": direction, "reason": reason}
        )
    except ValidationError as error:
        _fail(_validation_message(error))

    def post(operations: Any, caller: _Caller) -> Any:
        path = f"/customers/{customer_id}/adjustments"
        return operations.adjust(
            caller.context("POST", path, idempotency_key), customer_id, request
        )

    _run(post, writes=True)


def anomalies(
    since: Annotated[str | None, typer.Option(help="Findings of this day or later.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
) -> None:
    """Anomaly and reconciliation findings, newest first (as of the last published snapshot)."""

    def findings(operations: Any, caller: _Caller) -> Any:
        return operations.anomalies(date.fromisoformat(since) if since else None, limit)

    _run(findings)


def explain(
    customer: Annotated[
        str | None, typer.Option(help="Customer id (with --metric, --day).")
    ] = None,
    metric: Annotated[str | None, typer.Option(help="Price-book meter id.")] = None,
    day: Annotated[str | None, typer.Option(help="Usage day, e.g. 2026-10-01.")] = None,
    event_id: Annotated[str | None, typer.Option(help="A raw event id, traced forward.")] = None,
) -> None:
    """Trace a billed amount back to its raw events (--customer --metric --day), or a raw event
    forward (--event-id): the same answer as GET /explain, as JSON."""
    if event_id is None and not (customer and metric and day):
        raise typer.BadParameter("Give --customer, --metric and --day, or --event-id.")

    def explained(operations: Any, caller: _Caller) -> Any:
        if event_id is not None:
            return operations.explain_event(event_id)
        return operations.explain_slot(customer, metric, date.fromisoformat(day))

    _run(explained)


def _validation_message(error: Any) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or 'input'}: {problem['msg']}"
        for problem in error.errors()
    )

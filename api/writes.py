"""The API's writes: credit grants (with a second approver over a threshold) and adjustments.

Each runs in one PostgreSQL transaction: the Idempotency-Key claim, the ledger posting, the
grant record, the audit record and the stored response commit together or not at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg

from api import store
from api.auth import Principal, Role
from api.config import ApiConfig
from api.errors import ApiError
from api.ledger_tx import post_in_open_transaction
from api.models import Adjustment, AdjustmentRequest, CreditGrant, CreditGrantRequest
from ledger import LedgerBalanceError, LedgerConflictError, LedgerValidationError
from ledger.model import normalised
from ledger.postings import CreditKind, adjustment, credit_grant

# A key becomes part of ledger keys (``credit_grant:api-<key>``, ``adjustment:<key>``), which
# hold at most 255 characters.
IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9._:-]{1,200}$"
GRANT_ID_PREFIX = "api-"


def check_idempotency_key(key: str | None) -> str:
    """The key of a write, which every write must carry (a retry reuses it)."""
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
    return key


@dataclass(frozen=True)
class WriteResult:
    status_code: int
    body: dict[str, Any]
    replayed: bool


@dataclass(frozen=True)
class RequestContext:
    principal: Principal
    request_id: str
    method: str
    path: str
    idempotency_key: str


@contextmanager
def ledger_refusals() -> Iterator[None]:
    """The ledger's refusals as API errors (nothing was written: the transaction rolls back)."""
    try:
        yield
    except LedgerConflictError as error:
        raise ApiError(409, "ledger_conflict", str(error)) from error
    except LedgerBalanceError as error:
        raise ApiError(409, "insufficient_balance", str(error)) from error
    except LedgerValidationError as error:
        raise ApiError(422, "ledger_refused", str(error)) from error


def check_amount_within_role(config: ApiConfig, principal: Principal, amount: Decimal) -> None:
    limit = config.credit_limit_minor.get(principal.role, Decimal(0))
    if amount > limit:
        raise ApiError(
            403,
            "amount_over_role_limit",
            f"The {principal.role.value} role may move at most {normalised(limit)} minor units "
            f"at once, not {normalised(amount)}; ask someone with the finance role.",
        )


def check_currency(config: ApiConfig, *, customer_currency: str, currency: str) -> None:
    if currency not in config.currencies:
        raise ApiError(
            422,
            "unknown_currency",
            f"Currency {currency!r} is not one the price book bills in "
            f"({', '.join(sorted(config.currencies))}).",
        )
    if currency != customer_currency:
        raise ApiError(
            422,
            "currency_mismatch",
            f"The customer is billed in {customer_currency}, not {currency}; a customer's "
            "accounts hold one currency.",
        )


def _claim_idempotency_key(
    conn: psycopg.Connection,
    context: RequestContext,
    request: CreditGrantRequest | AdjustmentRequest,
) -> WriteResult | None:
    """Claim the request's Idempotency-Key inside the caller's transaction: the stored result
    if the key was used for this same request before, None if the key is new (a key reused
    for another request is refused by the store)."""
    fingerprint = store.request_hash(
        method=context.method,
        path=context.path,
        principal=context.principal,
        body=request.model_dump(mode="json"),
    )
    stored = store.claim_idempotency_key(
        conn,
        key=context.idempotency_key,
        principal=context.principal,
        fingerprint=fingerprint,
        method=context.method,
        path=context.path,
        request_id=context.request_id,
    )
    if stored is None:
        return None
    return WriteResult(stored.status_code, stored.body, replayed=True)


def grant_credit(
    conn: psycopg.Connection,
    config: ApiConfig,
    context: RequestContext,
    *,
    customer_id: str,
    customer_currency: str,
    request: CreditGrantRequest,
    now: datetime,
) -> WriteResult:
    principal = context.principal
    check_currency(config, customer_currency=customer_currency, currency=request.currency)
    unknown_metrics = sorted(set(request.metrics) - config.meters)
    if unknown_metrics:
        raise ApiError(
            422,
            "unknown_metric",
            f"Metrics {', '.join(unknown_metrics)} are not meters of the price book.",
        )
    if request.expires_at is not None and request.expires_at <= now:
        raise ApiError(422, "expiry_in_past", "expires_at must be in the future.")
    if request.kind == "prepaid" and principal.role is not Role.FINANCE:
        raise ApiError(
            403,
            "forbidden",
            "Only the finance role records prepaid credit (it says cash came in).",
        )
    check_amount_within_role(config, principal, request.amount_minor)
    with conn.transaction():
        replayed = _claim_idempotency_key(conn, context, request)
        if replayed is not None:
            return replayed
        grant_id = GRANT_ID_PREFIX + context.idempotency_key
        needs_approval = request.amount_minor > config.approval_threshold_minor
        grant: dict[str, Any] = {
            "grant_id": grant_id,
            "customer_id": customer_id,
            "kind": request.kind,
            "amount_minor": request.amount_minor,
            "currency": request.currency,
            "reason": request.reason,
            "expires_at": request.expires_at,
            "priority": request.priority,
            "metrics": sorted(request.metrics),
            "status": "pending_approval" if needs_approval else "approved",
            "requested_by": principal.name,
            "requested_at": now,
            "approved_by": None,
            "approved_at": None,
            "ledger_transaction_key": None,
            "request_id": context.request_id,
        }
        if not needs_approval:
            transaction_key = _post_grant(conn, grant, approver=principal, now=now)
            grant |= {
                "approved_by": principal.name,
                "approved_at": now,
                "ledger_transaction_key": transaction_key,
            }
        store.insert_grant(conn, grant, config.approval_threshold_minor)
        store.audit(
            conn,
            request_id=context.request_id,
            principal=principal,
            action="credit_grant_requested" if needs_approval else "credit_granted",
            customer_id=customer_id,
            subject_id=grant_id,
            reason=request.reason,
            detail=_grant_detail(grant),
            idempotency_key=context.idempotency_key,
            ledger_transaction_key=grant["ledger_transaction_key"],
        )
        body = CreditGrant.model_validate(grant).model_dump(mode="json")
        store.record_response(conn, key=context.idempotency_key, status_code=201, body=body)
    return WriteResult(201, body, replayed=False)


def approve_grant(
    conn: psycopg.Connection,
    config: ApiConfig,
    *,
    principal: Principal,
    request_id: str,
    customer_id: str,
    grant_id: str,
    now: datetime,
) -> WriteResult:
    """The second step of a grant over the threshold, by someone with the finance role who did
    not request it. Approving an approved grant changes nothing and returns it."""
    with conn.transaction():
        grant = store.grant_for_update(conn, customer_id, grant_id)
        if grant["status"] == "approved":
            return WriteResult(200, CreditGrant.model_validate(grant).model_dump(mode="json"), True)
        if grant["requested_by"] == principal.name:
            raise ApiError(
                403,
                "second_approver_required",
                f"{principal.name} requested grant {grant_id}; someone else with the finance "
                "role must approve it.",
            )
        check_amount_within_role(config, principal, grant["amount_minor"])
        transaction_key = _post_grant(conn, grant, approver=principal, now=now)
        store.mark_approved(
            conn,
            grant_id=grant_id,
            approved_by=principal.name,
            approved_at=now,
            ledger_transaction_key=transaction_key,
        )
        grant |= {
            "status": "approved",
            "approved_by": principal.name,
            "approved_at": now,
            "ledger_transaction_key": transaction_key,
        }
        store.audit(
            conn,
            request_id=request_id,
            principal=principal,
            action="credit_grant_approved",
            customer_id=customer_id,
            subject_id=grant_id,
            reason=grant["reason"],
            detail=_grant_detail(grant),
            ledger_transaction_key=transaction_key,
        )
    return WriteResult(200, CreditGrant.model_validate(grant).model_dump(mode="json"), False)


def _post_grant(
    conn: psycopg.Connection, grant: dict[str, Any], *, approver: Principal, now: datetime
) -> str:
    requester = grant["requested_by"]
    actor = requester if approver.name == requester else f"{requester}, approved by {approver.name}"
    transaction = credit_grant(
        grant_id=grant["grant_id"],
        customer_id=grant["customer_id"],
        credit_kind=CreditKind(grant["kind"]),
        amount_minor=grant["amount_minor"],
        currency=grant["currency"],
        effective_at=now,
        actor=actor,
        reason=grant["reason"],
    )
    with ledger_refusals():
        post_in_open_transaction(conn, [transaction])
    return transaction.key


def _grant_detail(grant: dict[str, Any]) -> dict[str, Any]:
    return {
        "amount_minor": normalised(grant["amount_minor"]),
        "currency": grant["currency"],
        "kind": grant["kind"],
        "status": grant["status"],
        "expires_at": grant["expires_at"].isoformat() if grant["expires_at"] else None,
        "priority": grant["priority"],
        "metrics": list(grant["metrics"]),
    }


def post_adjustment(
    conn: psycopg.Connection,
    config: ApiConfig,
    context: RequestContext,
    *,
    customer_id: str,
    customer_currency: str,
    request: AdjustmentRequest,
    now: datetime,
) -> WriteResult:
    principal = context.principal
    check_currency(config, customer_currency=customer_currency, currency=request.currency)
    check_amount_within_role(config, principal, request.amount_minor)
    with conn.transaction():
        replayed = _claim_idempotency_key(conn, context, request)
        if replayed is not None:
            return replayed
        signed = request.amount_minor
        if request.direction == "raise_receivable":
            signed = signed.copy_negate()
        transaction = adjustment(
            adjustment_id=context.idempotency_key,
            customer_id=customer_id,
            amount_minor=signed,
            currency=request.currency,
            effective_at=now,
            actor=principal.name,
            reason=request.reason,
        )
        with ledger_refusals():
            post_in_open_transaction(conn, [transaction])
        store.audit(
            conn,
            request_id=context.request_id,
            principal=principal,
            action="adjustment_posted",
            customer_id=customer_id,
            subject_id=context.idempotency_key,
            reason=request.reason,
            detail={
                "amount_minor": normalised(request.amount_minor),
                "currency": request.currency,
                "direction": request.direction,
            },
            idempotency_key=context.idempotency_key,
            ledger_transaction_key=transaction.key,
        )
        body = Adjustment(
            adjustment_id=context.idempotency_key,
            customer_id=customer_id,
            direction=request.direction,
            amount_minor=request.amount_minor,
            currency=request.currency,
            reason=request.reason,
            posted_by=principal.name,
            effective_at=now,
            ledger_transaction_key=transaction.key,
            entries=[
                {"account": e.account, "amount_minor": e.amount_minor, "currency": e.currency}
                for e in transaction.entries
            ],
            request_id=context.request_id,
        ).model_dump(mode="json")
        store.record_response(conn, key=context.idempotency_key, status_code=201, body=body)
    return WriteResult(201, body, replayed=False)

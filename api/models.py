"""Request and response bodies. Amounts travel as strings of decimals in minor units (cents):
``"500"``, ``"12.345"``; a JSON number is refused, because a float cannot hold every cent."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)

from ledger.model import MAX_DECIMAL_PLACES, MAX_INTEGER_DIGITS, normalised

DECIMAL_TEXT = re.compile(
    rf"^-?[0-9]{{1,{MAX_INTEGER_DIGITS}}}(\.[0-9]{{1,{MAX_DECIMAL_PLACES}}})?$"
)
MAX_REASON_CHARS = 500
MAX_METRICS = 50


def _decimal_from_text(value: object) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if not isinstance(value, str):
        raise ValueError(
            f'amounts are strings of decimal minor units like "500" or "12.5", not a JSON '
            f"{type(value).__name__} ({value!r}): a float cannot hold every cent"
        )
    if not DECIMAL_TEXT.match(value):
        raise ValueError(
            f"{value!r} is not a decimal amount of minor units (digits, an optional '-', at "
            f'most {MAX_DECIMAL_PLACES} decimal places, e.g. "500")'
        )
    return Decimal(value)


def _positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise ValueError(f"the amount must be more than zero, not {normalised(value)}")
    return value


def _has_time_zone(value: datetime | None) -> datetime | None:
    if value is not None and value.utcoffset() is None:
        raise ValueError("a time needs its time zone, e.g. 2026-12-31T00:00:00Z")
    return value


AMOUNT_SCHEMA = {"type": "string", "pattern": DECIMAL_TEXT.pattern, "examples": ["500"]}
Amount = Annotated[
    Decimal,
    BeforeValidator(_decimal_from_text),
    PlainSerializer(normalised, return_type=str),
    WithJsonSchema(AMOUNT_SCHEMA),
]
PositiveAmount = Annotated[Amount, AfterValidator(_positive)]
Currency = Annotated[str, Field(pattern=r"^[a-z]{3}$", examples=["usd"])]
Reason = Annotated[str, Field(min_length=1, max_length=MAX_REASON_CHARS)]
MetricId = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,100}$")]
ZonedTime = Annotated[datetime, AfterValidator(_has_time_zone)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class CreditGrantRequest(_Request):
    """A credit for a customer. Promotional credit is given (an expense); prepaid credit was
    paid for outside Stripe's invoices (finance only)."""

    amount_minor: PositiveAmount
    currency: Currency
    reason: Reason
    kind: Literal["promotional", "prepaid"] = "promotional"
    expires_at: ZonedTime | None = None
    priority: int = Field(default=100, ge=0, le=1000, description="Lower is spent first.")
    metrics: list[MetricId] = Field(
        default_factory=list,
        max_length=MAX_METRICS,
        description="The price-book meters it pays for; empty: all.",
    )


class CreditGrant(BaseModel):
    grant_id: str
    customer_id: str
    kind: Literal["promotional", "prepaid"]
    amount_minor: Amount
    currency: str
    reason: str
    expires_at: datetime | None
    priority: int
    metrics: list[str]
    status: Literal["pending_approval", "approved"]
    requested_by: str
    requested_at: datetime
    approved_by: str | None
    approved_at: datetime | None
    ledger_transaction_key: str | None
    request_id: str


class AdjustmentRequest(_Request):
    """A correction of what a customer owes, posted as new ledger entries (never an edit)."""

    amount_minor: PositiveAmount
    currency: Currency
    direction: Literal["lower_receivable", "raise_receivable"]
    reason: Reason


class LedgerEntry(BaseModel):
    account: str
    amount_minor: Amount = Field(description="Signed: debits positive, credits negative.")
    currency: str


class Adjustment(BaseModel):
    adjustment_id: str
    customer_id: str
    direction: Literal["lower_receivable", "raise_receivable"]
    amount_minor: Amount
    currency: str
    reason: str
    posted_by: str
    effective_at: datetime
    ledger_transaction_key: str
    entries: list[LedgerEntry]
    request_id: str


class LedgerTransaction(BaseModel):
    transaction_key: str
    kind: str
    cause_type: str
    cause_id: str
    effective_at: datetime
    posted_at: datetime
    metadata: dict[str, str]
    reverses: str | None
    entries: list[LedgerEntry]


class LedgerPage(BaseModel):
    customer_id: str
    as_of: datetime = Field(description="The ledger's time of this read.")
    transactions: list[LedgerTransaction]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null: last.")


class ErrorDetail(BaseModel):
    field: str
    message: str


class Error(BaseModel):
    code: str = Field(examples=["unknown_customer"])
    message: str
    request_id: str
    details: list[ErrorDetail] | None = None


class ErrorBody(BaseModel):
    """Every refusal has this shape; ``code`` is stable, ``message`` is for people."""

    error: Error

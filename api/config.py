"""The API's configuration: the pipeline's settings plus tokens, limits and sizes from the
environment. Every limit has a default; only the tokens must be configured (an API without
tokens would answer nobody)."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from api.auth import Principal, Role, parse_tokens
from orchestration.settings import DBT_PROJECT_DIR, Settings

# Minor units (cents). Support gives goodwill, finance anything a customer could be owed;
# a grant over the threshold waits for a second person with the finance role.
DEFAULT_CREDIT_LIMIT_MINOR = {
    Role.VIEWER: Decimal(0),
    Role.SUPPORT: Decimal(10_000),
    Role.FINANCE: Decimal(1_000_000),
}
DEFAULT_APPROVAL_THRESHOLD_MINOR = Decimal(5_000)
DEFAULT_MAX_BODY_BYTES = 16 * 1024
# Stripe events carry whole objects (an invoice with its lines): a larger limit on that path.
DEFAULT_MAX_WEBHOOK_BODY_BYTES = 1024 * 1024
DEFAULT_POOL_SIZE = 10


@dataclass(frozen=True)
class ApiConfig:
    ledger_url: str
    principals: Mapping[str, Principal]  # by token sha256
    customers_csv: Path  # the Stripe export of customers: who exists, in which currency
    currencies: frozenset[str]  # those the price book bills in
    meters: frozenset[str]  # the price book's meters, which a credit may be limited to
    credit_limit_minor: Mapping[Role, Decimal] = field(
        default_factory=lambda: dict(DEFAULT_CREDIT_LIMIT_MINOR)
    )
    approval_threshold_minor: Decimal = DEFAULT_APPROVAL_THRESHOLD_MINOR
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_webhook_body_bytes: int = DEFAULT_MAX_WEBHOOK_BODY_BYTES
    pool_size: int = DEFAULT_POOL_SIZE
    stripe_webhook_secret: str | None = None
    # Where the pipeline publishes read-only copies of the marts for the API (see docs/api.md).
    snapshot_dir: Path | None = None


def price_book_currencies(seeds_dir: Path = DBT_PROJECT_DIR / "seeds") -> frozenset[str]:
    with (seeds_dir / "price_book_plans.csv").open(newline="") as handle:
        return frozenset(row["currency"] for row in csv.DictReader(handle))


def price_book_meters(seeds_dir: Path = DBT_PROJECT_DIR / "seeds") -> frozenset[str]:
    with (seeds_dir / "price_book_meters.csv").open(newline="") as handle:
        return frozenset(row["meter_id"] for row in csv.DictReader(handle))


def config_from_env(settings: Settings, ledger_url: str) -> ApiConfig:
    """Read ``METERBOOK_API_*`` (and ``STRIPE_WEBHOOK_SECRET``) once, at start-up."""
    limits = dict(DEFAULT_CREDIT_LIMIT_MINOR)
    limits[Role.SUPPORT] = _minor("METERBOOK_API_SUPPORT_CREDIT_LIMIT_MINOR", limits[Role.SUPPORT])
    limits[Role.FINANCE] = _minor("METERBOOK_API_FINANCE_CREDIT_LIMIT_MINOR", limits[Role.FINANCE])
    return ApiConfig(
        ledger_url=ledger_url,
        principals=parse_tokens(os.environ.get("METERBOOK_API_TOKENS", "")),
        customers_csv=settings.raw_stripe_dir / "customers.csv",
        currencies=price_book_currencies(settings.price_book_dir),
        meters=price_book_meters(settings.price_book_dir),
        credit_limit_minor=limits,
        approval_threshold_minor=_minor(
            "METERBOOK_API_APPROVAL_THRESHOLD_MINOR", DEFAULT_APPROVAL_THRESHOLD_MINOR
        ),
        max_body_bytes=int(os.environ.get("METERBOOK_API_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)),
        pool_size=int(os.environ.get("METERBOOK_API_POOL_SIZE", DEFAULT_POOL_SIZE)),
        stripe_webhook_secret=os.environ.get("STRIPE_WEBHOOK_SECRET") or None,
        snapshot_dir=settings.api_snapshot_dir,
    )


def _minor(name: str, default: Decimal) -> Decimal:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{name} must be a decimal number of minor units, not {text!r}.") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"{name} must be zero or more minor units, not {text!r}.")
    return value

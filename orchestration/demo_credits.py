"""The demo's credit grants: a few customers get credit on the first day of the sample month,
through the billing API's own write path (checked, audited, posted to the ledger), so the demo
shows usage drawing credit down, in priority order, and an expiry.

The grants are dated at the start of the month (a demo seeds history, as the sample data does);
their idempotency keys derive from the month, so running the demo again changes nothing.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import psycopg

from api import store
from api.auth import Principal, Role
from api.config import ApiConfig, price_book_currencies, price_book_meters
from api.models import CreditGrantRequest
from api.writes import RequestContext, grant_credit
from ledger.migrations import migrate
from orchestration.settings import Settings

DEMO_ACTOR = Principal(name="demo-finance", role=Role.FINANCE)


@dataclass(frozen=True)
class DemoGrant:
    customer_index: int  # in the export's order of customer ids
    kind: str
    amount_minor: Decimal
    priority: int
    expires_after_days: int | None  # from the month's first day
    reason: str


# Within the API's default approval threshold (5,000), so no second approver is needed.
DEMO_GRANTS = (
    DemoGrant(0, "promotional", Decimal(5_000), 10, 7, "welcome credit, first week"),
    DemoGrant(0, "prepaid", Decimal(4_000), 50, None, "prepaid top-up"),
    DemoGrant(1, "promotional", Decimal(3_000), 10, 2, "trial credit, two days"),
)


def grant_demo_credits(settings: Settings, ledger_url: str, first_day: date) -> int:
    """Grant ``DEMO_GRANTS`` (again: a replay changes nothing); returns how many there are."""
    with (settings.raw_stripe_dir / "customers.csv").open(newline="") as handle:
        customers = sorted((row["id"], row["currency"]) for row in csv.DictReader(handle))
    config = ApiConfig(
        ledger_url=ledger_url,
        principals={},
        customers_csv=settings.raw_stripe_dir / "customers.csv",
        currencies=price_book_currencies(settings.price_book_dir),
        meters=price_book_meters(settings.price_book_dir),
    )
    granted_at = datetime.combine(first_day, time(0), tzinfo=UTC)
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        migrate(conn)
        store.ensure_schema(conn)
        for number, grant in enumerate(DEMO_GRANTS, start=1):
            customer_id, currency = customers[grant.customer_index]
            key = f"demo-{first_day.isoformat()}-{number}"
            expires_at = (
                granted_at + timedelta(days=grant.expires_after_days)
                if grant.expires_after_days is not None
                else None
            )
            result = grant_credit(
                conn,
                config,
                RequestContext(
                    principal=DEMO_ACTOR,
                    request_id=f"req-{key}",
                    method="POST",
                    path=f"/customers/{customer_id}/credits",
                    idempotency_key=key,
                ),
                customer_id=customer_id,
                customer_currency=currency,
                request=CreditGrantRequest(
                    amount_minor=grant.amount_minor,
                    currency=currency,
                    reason=grant.reason,
                    kind=grant.kind,  # type: ignore[arg-type]
                    priority=grant.priority,
                    expires_at=expires_at,
                ),
                now=granted_at,
            )
            if result.status_code not in (200, 201):
                raise RuntimeError(f"Demo credit grant {key} was refused: {result.body}")
    return len(DEMO_GRANTS)

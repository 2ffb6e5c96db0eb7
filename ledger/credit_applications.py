"""Turn the credit allocation (pricing/credits.py) into ledger transactions that post only
what has changed, the way usage accruals do (ledger/usage_accruals.py).

Two kinds of cause, each brought to its target amount by revisions ``r1, r2, …`` whose keys
derive from the cause and the revision number only:

- ``credit_application`` ``<grant>:<customer>:<meter>:<day>``: credit a grant paid for one usage
  slot. The credit account (prepaid or promotional) is debited, the unbilled receivable
  credited: the customer owes that much less. A negative revision returns credit to the grant.
- ``credit_expiry`` ``<grant>``: what the grant held when it expired, moved out of the credit
  account (prepaid: breakage revenue; promotional: the expense is released).

A re-run with the same allocation posts nothing; a late event that changes what a grant paid
posts the differences, the expiry's included, in the same batch, so the credit account never
goes below zero at commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg

from ledger.accounts import customer_account, platform_account
from ledger.model import Transaction
from ledger.postings import CREDIT_ACCOUNT, CREDIT_EXPIRY_TARGET, CreditKind
from ledger.revisions import next_revision
from ledger.store import CauseTotal
from ledger.usage_accruals import accrual_effective_at, slot_id, unbilled_receivable_account
from pricing.credits import CreditAllocation, CreditGrant

CREDIT_APPLICATION_KIND = "credit_application"
CREDIT_EXPIRY_KIND = "credit_expiry"


@dataclass(frozen=True)
class LedgerGrant:
    """A grant's terms and the kind of credit it is (which accounts it moves)."""

    terms: CreditGrant
    credit_kind: CreditKind

    @property
    def credit_account(self) -> str:
        return customer_account(self.terms.customer_id, CREDIT_ACCOUNT[self.credit_kind])


@dataclass(frozen=True)
class _Target:
    cause_id: str
    currency: str
    amount_minor: Decimal
    effective_at: datetime
    metadata: dict[str, str]


def plan_credit_postings(
    grants: Iterable[LedgerGrant],
    allocation: CreditAllocation,
    *,
    posted_applications: Mapping[str, CauseTotal],
    posted_expiries: Mapping[str, CauseTotal],
) -> list[Transaction]:
    """The transactions that bring the ledger to ``allocation``: every application and expiry
    of it, and back to zero any application posted before that the allocation no longer has.
    ``posted_*`` must cover every posted cause of the grants' customers."""
    by_id = {grant.terms.grant_id: grant for grant in grants}
    applications: dict[str, _Target] = {}
    last_applied: dict[str, datetime] = {}
    for application in allocation.applications:
        grant = by_id[application.grant_id]
        day_start = accrual_effective_at(application.usage_date)
        effective_at = max(day_start, grant.terms.effective_at)
        slot = slot_id(application.customer_id, application.meter_id, application.usage_date)
        cause_id = f"{application.grant_id}:{slot}"
        applications[cause_id] = _Target(
            cause_id,
            application.currency,
            application.amount_minor,
            effective_at,
            {
                "customer_id": application.customer_id,
                "grant_id": application.grant_id,
                "meter_id": application.meter_id,
                "usage_date": application.usage_date.isoformat(),
            },
        )
        last_applied[application.grant_id] = max(
            last_applied.get(application.grant_id, effective_at), effective_at
        )
    transactions = []
    for cause_id in sorted(applications.keys() | posted_applications.keys()):
        grant = by_id[_parse_application(cause_id)[0]]
        target = applications.get(cause_id) or _gone(cause_id, grant, posted_applications)
        transaction = _difference(
            CREDIT_APPLICATION_KIND,
            target,
            posted_applications.get(cause_id),
            grant.credit_account,
            unbilled_receivable_account(grant.terms.customer_id),
        )
        if transaction is not None:
            transactions.append(transaction)
    for expiry in allocation.expiries:
        grant = by_id[expiry.grant_id]
        # A return after the expiry (a lowered charge) is expired when it comes back.
        effective_at = max(expiry.expires_at, last_applied.get(expiry.grant_id, expiry.expires_at))
        target = _Target(
            expiry.grant_id,
            expiry.currency,
            expiry.remaining_minor,
            effective_at,
            {"customer_id": expiry.customer_id, "grant_id": expiry.grant_id},
        )
        transaction = _difference(
            CREDIT_EXPIRY_KIND,
            target,
            posted_expiries.get(expiry.grant_id),
            grant.credit_account,
            platform_account(CREDIT_EXPIRY_TARGET[grant.credit_kind]),
        )
        if transaction is not None:
            transactions.append(transaction)
    return transactions


def approved_credit_grants(conn: psycopg.Connection) -> list[LedgerGrant]:
    """Every approved grant's terms (the billing API keeps them in ``api.credit_grants``),
    effective when the grant was posted to the ledger: what the pipeline applies to usage.
    None before the API first ran (no table yet)."""
    if conn.execute("select to_regclass('api.credit_grants')").fetchone() == (None,):
        return []
    rows = conn.execute(
        """
        select g.grant_id, g.customer_id, g.credit_kind, g.currency, g.amount_minor,
               t.effective_at, g.expires_at, g.priority, g.metrics
        from api.credit_grants g
        join ledger.transactions t on t.transaction_key = g.ledger_transaction_key
        where g.status = 'approved'
        order by g.grant_id
        """
    ).fetchall()
    return [ledger_grant_from_row(row) for row in rows]


def ledger_grant_from_row(row: Sequence[Any]) -> LedgerGrant:
    """A grant from a row of (grant_id, customer_id, credit_kind, currency, amount_minor,
    effective_at, expires_at, priority, meters), as the ledger database and the warehouse's
    copy (``billing.credit_grants``) both hold it."""
    (
        grant_id,
        customer_id,
        credit_kind,
        currency,
        amount,
        effective_at,
        expires_at,
        priority,
        meters,
    ) = row
    return LedgerGrant(
        CreditGrant(
            grant_id=grant_id,
            customer_id=customer_id,
            currency=currency,
            amount_minor=Decimal(amount),
            effective_at=effective_at,
            expires_at=expires_at,
            priority=priority,
            meters=frozenset(meters),
        ),
        CreditKind(credit_kind),
    )


def _gone(cause_id: str, grant: LedgerGrant, posted: Mapping[str, CauseTotal]) -> _Target:
    """An application posted before that the allocation no longer makes: back to zero."""
    _, customer_id, meter_id, day = _parse_application(cause_id)
    return _Target(
        cause_id,
        posted[cause_id].currency,
        Decimal(0),
        max(accrual_effective_at(date.fromisoformat(day)), grant.terms.effective_at),
        {
            "customer_id": customer_id,
            "grant_id": grant.terms.grant_id,
            "meter_id": meter_id,
            "usage_date": day,
        },
    )


def _parse_application(cause_id: str) -> tuple[str, str, str, str]:
    """Grant, customer, meter and day of an application's cause id (a grant id may hold ':',
    the others may not)."""
    grant_id, customer_id, meter_id, day = cause_id.rsplit(":", 3)
    return grant_id, customer_id, meter_id, day


def _difference(
    kind: str, target: _Target, posted: CauseTotal | None, debited: str, credited: str
) -> Transaction | None:
    """The next revision of a cause whose total moves ``debited`` up and ``credited`` down."""
    return next_revision(
        kind=kind,
        cause_type=kind,
        cause_id=target.cause_id,
        target_minor=target.amount_minor,
        posted=posted,
        debited=debited,
        credited=credited,
        currency=target.currency,
        effective_at=target.effective_at,
        metadata=target.metadata,
        target_label="target_amount_minor",
    )

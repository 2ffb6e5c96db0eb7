"""Posting rules: one function per business event, each returning the balanced transaction to post.

Keys are derived from what the event is about (a grant, an invoice, a Stripe payment, an API
request's idempotency key), never from run ids or clocks, so posting an event twice is a no-op.
Amounts are exact ``Decimal`` minor units (cents) and must be positive: the rule decides the
direction. ``docs/ledger.md`` walks through each rule with an example.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from ledger.accounts import CustomerAccount, PlatformAccount, customer_account, platform_account
from ledger.errors import LedgerValidationError
from ledger.model import EXACT, Entry, Transaction, decimal_places


class CreditKind(StrEnum):
    PREPAID = "prepaid"  # bought: cash in, a liability until used or expired (then breakage)
    PROMOTIONAL = "promotional"  # given: an expense, released again if it expires unused


CREDIT_ACCOUNT = {
    CreditKind.PREPAID: CustomerAccount.PREPAID_CREDIT,
    CreditKind.PROMOTIONAL: CustomerAccount.PROMOTIONAL_CREDIT,
}
# Where a grant's value comes from, and where an unused remainder goes when it expires.
CREDIT_SOURCE = {
    CreditKind.PREPAID: PlatformAccount.STRIPE_CLEARING,
    CreditKind.PROMOTIONAL: PlatformAccount.PROMOTIONAL_EXPENSE,
}
CREDIT_EXPIRY_TARGET = {
    CreditKind.PREPAID: PlatformAccount.CREDIT_BREAKAGE,
    CreditKind.PROMOTIONAL: PlatformAccount.PROMOTIONAL_EXPENSE,
}


def _positive(what: str, amount: Decimal) -> Decimal:
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount <= 0:
        raise LedgerValidationError(
            f"{what}: the amount must be a positive Decimal of minor units, not {amount!r}; "
            "the posting rule decides the direction."
        )
    return amount


def _whole_cents(what: str, amount: Decimal) -> Decimal:
    if decimal_places(amount) > 0:
        raise LedgerValidationError(
            f"{what}: {amount} is not a whole number of minor units; invoices and payments "
            "are in whole cents (round with the rounding rule first)."
        )
    return amount


def _transfer(
    *,
    key: str,
    kind: str,
    cause_type: str,
    cause_id: str,
    effective_at: datetime,
    debit: str,
    credit: str,
    amount: Decimal,
    currency: str,
    metadata: dict[str, str],
) -> Transaction:
    return Transaction(
        key=key,
        kind=kind,
        cause_type=cause_type,
        cause_id=cause_id,
        effective_at=effective_at,
        entries=(Entry(debit, amount, currency), Entry(credit, amount.copy_negate(), currency)),
        metadata=metadata,
    )


def credit_grant(
    *,
    grant_id: str,
    customer_id: str,
    credit_kind: CreditKind,
    amount_minor: Decimal,
    currency: str,
    effective_at: datetime,
    actor: str,
    reason: str,
) -> Transaction:
    """A credit granted: prepaid (paid for, through Stripe) or promotional (given away)."""
    amount = _positive(f"Credit grant {grant_id}", amount_minor)
    _need_reason(f"Credit grant {grant_id}", actor, reason)
    return _transfer(
        key=f"credit_grant:{grant_id}",
        kind="credit_grant",
        cause_type="credit_grant",
        cause_id=grant_id,
        effective_at=effective_at,
        debit=platform_account(CREDIT_SOURCE[credit_kind]),
        credit=customer_account(customer_id, CREDIT_ACCOUNT[credit_kind]),
        amount=amount,
        currency=currency,
        metadata={
            "customer_id": customer_id,
            "credit_kind": credit_kind.value,
            "actor": actor,
            "reason": reason,
        },
    )


def credit_consumption(
    *,
    grant_id: str,
    customer_id: str,
    credit_kind: CreditKind,
    consumed_by: str,
    amount_minor: Decimal,
    currency: str,
    effective_at: datetime,
) -> Transaction:
    """Credit spent on usage: it pays part of the unbilled receivable. ``consumed_by`` names
    what used it (a usage slot or an invoice); the credit account may not go negative."""
    amount = _positive(f"Consumption of grant {grant_id}", amount_minor)
    return _transfer(
        key=f"credit_consumption:{grant_id}:{consumed_by}",
        kind="credit_consumption",
        cause_type="credit_grant",
        cause_id=grant_id,
        effective_at=effective_at,
        debit=customer_account(customer_id, CREDIT_ACCOUNT[credit_kind]),
        credit=customer_account(customer_id, CustomerAccount.UNBILLED_RECEIVABLE),
        amount=amount,
        currency=currency,
        metadata={
            "customer_id": customer_id,
            "credit_kind": credit_kind.value,
            "consumed_by": consumed_by,
        },
    )


def credit_expiry(
    *,
    grant_id: str,
    customer_id: str,
    credit_kind: CreditKind,
    remaining_minor: Decimal,
    currency: str,
    effective_at: datetime,
) -> Transaction:
    """The unused remainder of a grant at its expiry, recorded rather than silently lost:
    prepaid credit becomes breakage revenue, promotional credit releases its expense."""
    amount = _positive(f"Expiry of grant {grant_id}", remaining_minor)
    return _transfer(
        key=f"credit_expiry:{grant_id}",
        kind="credit_expiry",
        cause_type="credit_grant",
        cause_id=grant_id,
        effective_at=effective_at,
        debit=customer_account(customer_id, CREDIT_ACCOUNT[credit_kind]),
        credit=platform_account(CREDIT_EXPIRY_TARGET[credit_kind]),
        amount=amount,
        currency=currency,
        metadata={"customer_id": customer_id, "credit_kind": credit_kind.value},
    )


def subscription_fee(
    *,
    subscription_id: str,
    customer_id: str,
    period_start: str,
    amount_minor: Decimal,
    currency: str,
    effective_at: datetime,
) -> Transaction:
    """A plan's recurring fee for the period starting ``period_start`` (billed in advance)."""
    amount = _positive(f"Fee of subscription {subscription_id}", amount_minor)
    return _transfer(
        key=f"subscription_fee:{subscription_id}:{period_start}",
        kind="subscription_fee",
        cause_type="subscription_period",
        cause_id=f"{subscription_id}:{period_start}",
        effective_at=effective_at,
        debit=customer_account(customer_id, CustomerAccount.UNBILLED_RECEIVABLE),
        credit=platform_account(PlatformAccount.SUBSCRIPTION_REVENUE),
        amount=amount,
        currency=currency,
        metadata={"customer_id": customer_id, "period_start": period_start},
    )


def invoice_finalisation(
    *,
    invoice_id: str,
    customer_id: str,
    unbilled_minor: Decimal,
    invoiced_minor: Decimal,
    currency: str,
    effective_at: datetime,
) -> Transaction:
    """An invoice finalised: the exact unbilled amount it covers becomes a receivable of whole
    cents, and the difference between the two goes to the rounding account."""
    what = f"Invoice {invoice_id}"
    if unbilled_minor < 0 or invoiced_minor < 0:
        raise LedgerValidationError(f"{what}: amounts must not be negative.")
    _whole_cents(what, invoiced_minor)
    rounding = EXACT.subtract(invoiced_minor, unbilled_minor)
    entries = [
        Entry(customer_account(customer_id, CustomerAccount.RECEIVABLE), invoiced_minor, currency),
        Entry(
            customer_account(customer_id, CustomerAccount.UNBILLED_RECEIVABLE),
            unbilled_minor.copy_negate(),
            currency,
        ),
    ]
    if rounding:
        entries.append(
            Entry(platform_account(PlatformAccount.ROUNDING), rounding.copy_negate(), currency)
        )
    return Transaction(
        key=f"invoice_finalised:{invoice_id}",
        kind="invoice_finalised",
        cause_type="invoice",
        cause_id=invoice_id,
        effective_at=effective_at,
        entries=tuple(entries),
        metadata={"customer_id": customer_id, "rounding_minor": str(rounding)},
    )


def payment_received(
    *,
    payment_id: str,
    invoice_id: str,
    customer_id: str,
    amount_minor: Decimal,
    currency: str,
    effective_at: datetime,
) -> Transaction:
    """A payment Stripe collected for an invoice: the receivable clears to Stripe's balance."""
    amount = _whole_cents(f"Payment {payment_id}", _positive(f"Payment {payment_id}", amount_minor))
    return _transfer(
        key=f"payment:{payment_id}",
        kind="payment",
        cause_type="stripe_payment",
        cause_id=payment_id,
        effective_at=effective_at,
        debit=platform_account(PlatformAccount.STRIPE_CLEARING),
        credit=customer_account(customer_id, CustomerAccount.RECEIVABLE),
        amount=amount,
        currency=currency,
        metadata={"customer_id": customer_id, "invoice_id": invoice_id},
    )


def write_off(
    *,
    invoice_id: str,
    customer_id: str,
    amount_minor: Decimal,
    currency: str,
    effective_at: datetime,
) -> Transaction:
    """An invoice given up on (Stripe: marked uncollectible): its open amount becomes bad debt."""
    what = f"Write-off of invoice {invoice_id}"
    amount = _whole_cents(what, _positive(what, amount_minor))
    return _transfer(
        key=f"write_off:{invoice_id}",
        kind="write_off",
        cause_type="invoice",
        cause_id=invoice_id,
        effective_at=effective_at,
        debit=platform_account(PlatformAccount.BAD_DEBT),
        credit=customer_account(customer_id, CustomerAccount.RECEIVABLE),
        amount=amount,
        currency=currency,
        metadata={"customer_id": customer_id},
    )


def refund(
    *,
    refund_id: str,
    charge_id: str,
    amount_minor: Decimal,
    currency: str,
    effective_at: datetime,
) -> Transaction:
    """Money given back through Stripe: a contra-revenue cost paid out of Stripe's balance.
    Linked to the charge (a Stripe refund names its charge, not the customer)."""
    amount = _whole_cents(f"Refund {refund_id}", _positive(f"Refund {refund_id}", amount_minor))
    return _transfer(
        key=f"refund:{refund_id}",
        kind="refund",
        cause_type="stripe_refund",
        cause_id=refund_id,
        effective_at=effective_at,
        debit=platform_account(PlatformAccount.REFUNDS),
        credit=platform_account(PlatformAccount.STRIPE_CLEARING),
        amount=amount,
        currency=currency,
        metadata={"charge_id": charge_id},
    )


def adjustment(
    *,
    adjustment_id: str,
    customer_id: str,
    amount_minor: Decimal,
    currency: str,
    effective_at: datetime,
    actor: str,
    reason: str,
) -> Transaction:
    """A manual correction of what a customer owes, with who and why: a positive amount lowers
    the receivable (a goodwill credit), a negative one raises it. Never an edit of the past."""
    _need_reason(f"Adjustment {adjustment_id}", actor, reason)
    if not isinstance(amount_minor, Decimal) or not amount_minor.is_finite() or not amount_minor:
        raise LedgerValidationError(
            f"Adjustment {adjustment_id}: the amount must be a non-zero Decimal, not "
            f"{amount_minor!r}."
        )
    receivable = customer_account(customer_id, CustomerAccount.RECEIVABLE)
    adjustments = platform_account(PlatformAccount.ADJUSTMENTS)
    lowers = amount_minor > 0
    return _transfer(
        key=f"adjustment:{adjustment_id}",
        kind="adjustment",
        cause_type="adjustment",
        cause_id=adjustment_id,
        effective_at=effective_at,
        debit=adjustments if lowers else receivable,
        credit=receivable if lowers else adjustments,
        amount=abs(amount_minor),
        currency=currency,
        metadata={"customer_id": customer_id, "actor": actor, "reason": reason},
    )


def _need_reason(what: str, actor: str, reason: str) -> None:
    if not actor or not actor.strip() or not reason or not reason.strip():
        raise LedgerValidationError(
            f"{what}: an actor (who) and a reason (why) are required for the audit trail."
        )

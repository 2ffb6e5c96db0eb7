"""The chart of accounts: which accounts exist, their normal side, and which may not go negative.

Names are ``customer:<id>:<purpose>`` and ``platform:<purpose>``. An account holds one currency
(the price book's); a second currency gets its own accounts under a ``:<currency>`` suffix.

Amounts are signed: debits positive, credits negative. A *debit-normal* account (an asset or an
expense) grows with debits; a *credit-normal* one (a liability or revenue) grows with credits.
"""

from __future__ import annotations

from enum import StrEnum

from ledger.model import Account, NormalSide


class CustomerAccount(StrEnum):
    """One of each per customer."""

    UNBILLED_RECEIVABLE = "unbilled_receivable"  # usage rated but not invoiced yet (asset)
    RECEIVABLE = "receivable"  # invoiced, not paid yet (asset)
    PREPAID_CREDIT = "prepaid_credit"  # credit bought and not used yet (liability)
    PROMOTIONAL_CREDIT = "promotional_credit"  # credit given away and not used yet (liability)


class PlatformAccount(StrEnum):
    """One of each for the whole platform."""

    USAGE_REVENUE = "usage_revenue"
    SUBSCRIPTION_REVENUE = "subscription_revenue"
    CREDIT_BREAKAGE = "credit_breakage"  # prepaid credit that expired unused: revenue
    PROMOTIONAL_EXPENSE = "promotional_expense"  # the cost of credit given away
    ROUNDING = "rounding"  # exact rated amounts vs whole cents invoiced
    STRIPE_CLEARING = "stripe_clearing"  # cash collected by Stripe, not paid out yet (asset)
    REFUNDS = "refunds"  # money given back (contra revenue)
    ADJUSTMENTS = "adjustments"  # manual corrections of what a customer owes (contra revenue)
    BAD_DEBT = "bad_debt"  # receivables written off as uncollectible (expense)


CUSTOMER_SIDES: dict[CustomerAccount, NormalSide] = {
    CustomerAccount.UNBILLED_RECEIVABLE: "debit",
    CustomerAccount.RECEIVABLE: "debit",
    CustomerAccount.PREPAID_CREDIT: "credit",
    CustomerAccount.PROMOTIONAL_CREDIT: "credit",
}
# Credit balances can be spent and expired, never overdrawn: the database refuses it.
GUARDED = {CustomerAccount.PREPAID_CREDIT, CustomerAccount.PROMOTIONAL_CREDIT}

PLATFORM_SIDES: dict[PlatformAccount, NormalSide] = {
    PlatformAccount.USAGE_REVENUE: "credit",
    PlatformAccount.SUBSCRIPTION_REVENUE: "credit",
    PlatformAccount.CREDIT_BREAKAGE: "credit",
    PlatformAccount.PROMOTIONAL_EXPENSE: "debit",
    PlatformAccount.ROUNDING: "credit",
    PlatformAccount.STRIPE_CLEARING: "debit",
    PlatformAccount.REFUNDS: "debit",
    PlatformAccount.ADJUSTMENTS: "debit",
    PlatformAccount.BAD_DEBT: "debit",
}


def customer_account(customer_id: str, purpose: CustomerAccount) -> str:
    if not customer_id or ":" in customer_id:
        raise ValueError(
            f"Customer id {customer_id!r} cannot name a ledger account: it must be non-empty and "
            "contain no ':'."
        )
    return f"customer:{customer_id}:{purpose.value}"


def platform_account(purpose: PlatformAccount) -> str:
    return f"platform:{purpose.value}"


def customer_of(account: str) -> str | None:
    """The customer id of a customer account name, else None."""
    parts = account.split(":")
    return parts[1] if len(parts) == 3 and parts[0] == "customer" else None


def customer_accounts(customer_id: str, currency: str) -> list[Account]:
    return [
        Account(
            customer_account(customer_id, purpose),
            currency,
            normal_side=side,
            must_not_go_negative=purpose in GUARDED,
        )
        for purpose, side in CUSTOMER_SIDES.items()
    ]


def platform_accounts(currency: str) -> list[Account]:
    return [
        Account(platform_account(purpose), currency, normal_side=side)
        for purpose, side in PLATFORM_SIDES.items()
    ]


def chart_account(name: str, currency: str) -> Account:
    """The account ``name`` as the chart defines it; names outside the chart are plain debit
    accounts. Posting opens missing accounts this way, so a guarded account is guarded from its
    first entry."""
    customer_id = customer_of(name)
    if customer_id is not None:
        purpose = name.rsplit(":", 1)[1]
        if purpose in CustomerAccount._value2member_map_:
            kind = CustomerAccount(purpose)
            return Account(
                name,
                currency,
                normal_side=CUSTOMER_SIDES[kind],
                must_not_go_negative=kind in GUARDED,
            )
    if name.startswith("platform:"):
        purpose = name.removeprefix("platform:")
        if purpose in PlatformAccount._value2member_map_:
            return Account(name, currency, normal_side=PLATFORM_SIDES[PlatformAccount(purpose)])
    return Account(name, currency, normal_side="debit")

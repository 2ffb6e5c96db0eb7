"""What a run left behind, in the figures a person checks first."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import duckdb
import psycopg

from ledger import Ledger
from stripe_sync import outbox


@dataclass(frozen=True)
class CustomerBill:
    customer_id: str
    currency: str
    amount_minor: int


@dataclass(frozen=True)
class CreditSummary:
    """Credit grants in one currency and what became of them (exact minor units)."""

    currency: str
    grants: int
    granted_minor: Decimal
    applied_minor: Decimal
    expired_minor: Decimal

    @property
    def left_minor(self) -> Decimal:
        return self.granted_minor - self.applied_minor - self.expired_minor


@dataclass(frozen=True)
class ChargeModelSummary:
    """Usage rated under one charge model (an allowance counted apart), exact minor units."""

    charge_model: str
    with_allowance: bool
    currency: str
    customers: int
    amount_minor: Decimal
    negative_days: int  # days a volume tier lowered the period's amount


@dataclass(frozen=True)
class PlanChangeSummary:
    """A subscription changed away from at a second, and the fee prorations it caused."""

    customer_id: str
    from_plan: str
    to_plan: str
    changed_at: str  # UTC, to the second
    currency: str
    proration_minor: Decimal  # credit for the unused time + charge for the rest, as rounded


@dataclass(frozen=True)
class MeterAggregationSummary:
    """The meters of one aggregation (and whether they filter on properties) that billed usage:
    how many, the period quantities they added up to, and their amount."""

    aggregation: str
    filtered: bool
    meters: int
    customers: int
    quantity_units: int
    currency: str
    amount_minor: Decimal


@dataclass(frozen=True)
class MinimumSpendSummary:
    """One billing period's customers on a plan with a minimum spend, and the top-ups."""

    period: str  # YYYY-MM
    currency: str
    customers: int
    topped_up: int
    top_up_minor: Decimal


@dataclass(frozen=True)
class CappedCustomer:
    customer_id: str
    period_start: str  # the billing period in which the spend cap was reached
    capped_from: str  # the first day of that period on which it was
    capped_last_day: bool  # still capped on the customer's last rated day


@dataclass(frozen=True)
class PipelineSummary:
    raw_lines: int
    accepted_lines: int
    duplicate_lines: int
    quarantined_lines: int
    quarantine_reasons: dict[str, int]
    bills: list[CustomerBill]
    ledger_transactions: int
    ledger_balanced: bool
    ledger_content_hash: str
    usage_revenue_minor: Decimal
    outbox_states: dict[str, int] = field(default_factory=dict)
    # Per entitlement state (ok / warning / capped): customers in it on their last rated day.
    entitlement_states: dict[str, int] = field(default_factory=dict)
    credits: list[CreditSummary] = field(default_factory=list)
    charge_models: list[ChargeModelSummary] = field(default_factory=list)
    meter_aggregations: list[MeterAggregationSummary] = field(default_factory=list)
    plan_changes: list[PlanChangeSummary] = field(default_factory=list)
    minimum_spend: list[MinimumSpendSummary] = field(default_factory=list)
    capped_customers: list[CappedCustomer] = field(default_factory=list)
    # Customers by the day of the month their billing periods begin on (1: calendar months).
    billing_anchor_days: dict[int, int] = field(default_factory=dict)

    @property
    def lines_conserved(self) -> bool:
        return self.raw_lines == (
            self.accepted_lines + self.duplicate_lines + self.quarantined_lines
        )


def collect_summary(warehouse_path: str, ledger_url: str) -> PipelineSummary:
    with duckdb.connect(warehouse_path, read_only=True) as conn:
        counts = conn.execute(
            "select coalesce(sum(raw_lines), 0), coalesce(sum(accepted_lines), 0), "
            "coalesce(sum(duplicate_lines), 0), coalesce(sum(quarantined_lines), 0) "
            "from ingest.usage_file_counts"
        ).fetchone()
        reasons = conn.execute(
            "select reason, count(*) from ingest.quarantined_usage_lines group by 1 order by 2 desc"
        ).fetchall()
        bills = conn.execute(
            "select customer_id, currency, sum(amount_minor) from invoice_lines "
            "group by 1, 2 order by 3 desc, 1"
        ).fetchall()
        entitlements = conn.execute(
            "select entitlement_state, count(*) from (select customer_id, "
            "arg_max(entitlement_state, usage_date) as entitlement_state "
            "from customer_entitlements_daily group by customer_id) group by 1 order by 1"
        ).fetchall()
        credits = _credit_summaries(conn)
        charge_models = _charge_models(conn)
        meter_aggregations = _meter_aggregations(conn)
        plan_changes = _plan_changes(conn)
        minimum_spend = _minimum_spend(conn)
        capped = _capped_customers(conn)
        anchor_days = conn.execute(
            "select billing_anchor_day, count(*) from int_customer_billing_cycles "
            "group by 1 order by 1"
        ).fetchall()
    assert counts is not None
    with Ledger.connect(ledger_url) as book:
        report = book.verify()
        revenue = -book.balance("platform:usage_revenue", "usd")
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        outbox.ensure_schema(conn)
        states = outbox.state_counts(conn)
    return PipelineSummary(
        raw_lines=int(counts[0]),
        accepted_lines=int(counts[1]),
        duplicate_lines=int(counts[2]),
        quarantined_lines=int(counts[3]),
        quarantine_reasons={reason: int(n) for reason, n in reasons},
        bills=[CustomerBill(c, cur, int(amount)) for c, cur, amount in bills],
        ledger_transactions=report.transactions,
        ledger_balanced=not report.unbalanced_transactions,
        ledger_content_hash=report.content_hash,
        usage_revenue_minor=revenue,
        outbox_states=states,
        entitlement_states={state: int(n) for state, n in entitlements},
        credits=credits,
        charge_models=charge_models,
        meter_aggregations=meter_aggregations,
        plan_changes=plan_changes,
        minimum_spend=minimum_spend,
        capped_customers=capped,
        billing_anchor_days={int(day): int(n) for day, n in anchor_days},
    )


def _charge_models(conn: duckdb.DuckDBPyConnection) -> list[ChargeModelSummary]:
    rows = conn.execute(
        """
        select charge_model, included_units > 0, currency, count(distinct customer_id),
               sum(amount_minor_exact), count(*) filter (where amount_minor_exact < 0)
        from billable_usage_daily where is_priced group by 1, 2, 3 order by 1, 2, 3
        """
    ).fetchall()
    return [
        ChargeModelSummary(model, bool(allowance), currency, int(n), Decimal(amount), int(neg))
        for model, allowance, currency, n, amount, neg in rows
    ]


def _meter_aggregations(conn: duckdb.DuckDBPyConnection) -> list[MeterAggregationSummary]:
    rows = conn.execute(
        """
        select meters.aggregation, meters.property_filters is not null, rated.currency,
               count(distinct rated.meter_id), count(distinct rated.customer_id),
               sum(rated.quantity_units), sum(rated.amount_minor_exact)
        from billable_usage_daily as rated
        join price_book_meters as meters using (meter_id)
        where rated.is_priced
        group by 1, 2, 3 order by 1, 2, 3
        """
    ).fetchall()
    return [
        MeterAggregationSummary(agg, bool(filtered), int(m), int(n), int(q), cur, Decimal(a))
        for agg, filtered, cur, m, n, q, a in rows
    ]


def _plan_changes(conn: duckdb.DuckDBPyConnection) -> list[PlanChangeSummary]:
    """Subscriptions that ended where another of the same customer began, with the prorations
    of both (subscription_fee_lines links the old one to its successor)."""
    rows = conn.execute(
        """
        select old.customer_id, old.plan_id, new.plan_id,
               strftime(old.ended_at, '%Y-%m-%d %H:%M:%S'), old.currency,
               coalesce(sum(fees.amount_minor), 0)
        from stg_stripe__subscriptions old
        join stg_stripe__subscriptions new
          on new.customer_id = old.customer_id and new.started_at = old.ended_at
         and new.subscription_id <> old.subscription_id
        left join subscription_fee_lines fees
          on fees.subscription_id in (old.subscription_id, new.subscription_id)
         and fees.line_type in ('proration_credit', 'proration_charge')
         and fees.billing_period_start_at <= old.ended_at
         and fees.billing_period_end_at > old.ended_at
        group by 1, 2, 3, 4, 5 order by 4, 1
        """
    ).fetchall()
    return [
        PlanChangeSummary(customer, old, new, at, currency, Decimal(proration))
        for customer, old, new, at, currency, proration in rows
    ]


def _minimum_spend(conn: duckdb.DuckDBPyConnection) -> list[MinimumSpendSummary]:
    rows = conn.execute(
        """
        select strftime(billing_period_start_date, '%Y-%m'), currency, count(*),
               count(*) filter (where top_up_minor_exact > 0),
               coalesce(sum(top_up_minor_exact), 0)
        from minimum_spend_period group by 1, 2 order by 1, 2
        """
    ).fetchall()
    return [
        MinimumSpendSummary(period, currency, int(n), int(topped), Decimal(amount))
        for period, currency, n, topped, amount in rows
    ]


def _capped_customers(conn: duckdb.DuckDBPyConnection) -> list[CappedCustomer]:
    """Every billing period in which a customer reached their spend cap, from the first day it
    was reached: a cap reached in an earlier period of the run counts too (on the first day of
    a new period the spend starts again from zero)."""
    rows = conn.execute(
        """
        with last_day as (
            select customer_id, max(usage_date) as usage_date
            from customer_entitlements_daily group by 1
        )
        select e.customer_id, strftime(e.billing_period_start_date, '%Y-%m-%d'),
               strftime(min(e.usage_date), '%Y-%m-%d'), bool_or(e.usage_date = l.usage_date)
        from customer_entitlements_daily e
        join last_day l on l.customer_id = e.customer_id
        where e.entitlement_state = 'capped'
        group by e.customer_id, e.billing_period_start_date
        order by 3, 1
        """
    ).fetchall()
    return [CappedCustomer(*row) for row in rows]


def _credit_summaries(conn: duckdb.DuckDBPyConnection) -> list[CreditSummary]:
    """From the allocation the last run recorded (billing.credit_*; none before grants)."""
    (tables,) = conn.execute(
        "select count(*) from duckdb_tables() where schema_name = 'billing' "
        "and table_name in ('credit_grants', 'credit_applications', 'credit_expiries')"
    ).fetchone() or (0,)
    if tables < 3:
        return []
    rows = conn.execute(
        """
        select g.currency, count(*), sum(g.amount_minor),
               coalesce(sum(a.applied), 0), coalesce(sum(e.remaining_minor), 0)
        from billing.credit_grants g
        left join (select grant_id, sum(amount_minor) as applied
                   from billing.credit_applications group by 1) a using (grant_id)
        left join billing.credit_expiries e using (grant_id)
        group by 1 order by 1
        """
    ).fetchall()
    return [
        CreditSummary(currency, int(grants), Decimal(granted), Decimal(applied), Decimal(expired))
        for currency, grants, granted, applied, expired in rows
    ]


def format_minor(amount_minor: int | Decimal, currency: str) -> str:
    """Whole minor units as a decimal string in major units (exact, no float)."""
    major = Decimal(amount_minor) / Decimal(100)
    return f"{major:,.2f} {currency.upper()}"

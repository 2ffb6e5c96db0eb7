"""The effects: ledger postings and Stripe meter events for the usage dates a run touched.

Both compare what is rated now with what was already posted or sent, and write only the
difference under keys derived from the slot and revision, so any re-run is harmless.
"""

from dataclasses import dataclass
from datetime import UTC, date
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import psycopg

from crash_points import crash_point
from ledger.credit_applications import (
    CREDIT_APPLICATION_KIND,
    CREDIT_EXPIRY_KIND,
    approved_credit_grants,
    plan_credit_postings,
)
from ledger.fee_postings import SUBSCRIPTION_FEE_KIND, FeeLine, plan_fee_postings
from ledger.model import Transaction
from ledger.usage_accruals import (
    USAGE_ACCRUAL_KIND,
    RatedSlot,
    accrual_effective_at,
    plan_usage_accruals,
)
from orchestration import credit_tables, ledger_batches
from orchestration.assets.ingestion import WAREHOUSE_POOL
from orchestration.partitions import daily_partitions
from orchestration.resources import LedgerResource, StripeResource, WarehouseResource
from orchestration.settings import get_settings
from orchestration.stripe_holds import hold_unsettled, unsettled_customer_days
from pricing.credits import apply_credits
from pricing.meters import ADDITIVE_AGGREGATIONS
from stripe_sync import outbox
from stripe_sync.meter_event_stream import send_pending_meter_events_stream
from stripe_sync.meter_events import (
    METER_EVENT_OPERATION,
    MeterSlot,
    ensure_meters,
    plan_meter_events,
    send_pending_meter_events,
)
from stripe_sync.outbox import HeldSlot, OutboxIntent

BILLABLE_USAGE = dg.AssetKey("billable_usage_daily")
INVOICE_LINES = dg.AssetKey("invoice_lines")
PRICE_BOOK_METERS = dg.AssetKey("price_book_meters")


def touched_usage_dates(conn: duckdb.DuckDBPyConnection, start: date, end: date) -> set[date]:
    rows = conn.execute(
        "select distinct usage_date from ingest.partition_usage_dates "
        "where arrival_date >= ? and arrival_date < ?",
        [start, end],
    ).fetchall()
    return {day for (day,) in rows}


def rerated_usage_dates(conn: duckdb.DuckDBPyConnection, usage_dates: set[date]) -> set[date]:
    """The touched usage dates and every later rated date of their billing periods.

    A day's amount is priced on the period to date (docs/pricing.md), so usage that arrives for
    one day can change the amount of every later day of its period (a tier crossed earlier, an
    allowance used up sooner): the ledger must bring all of them to their new amounts.
    """
    if not usage_dates:
        return set()
    rows = conn.execute(
        """
        select distinct rated.usage_date
        from billable_usage_daily as rated
        inner join (select unnest(?::date[]) as usage_date) as touched
            -- The row's period (its customer's) began on or before the touched date.
            on rated.billing_period_start_date <= touched.usage_date
            and rated.usage_date > touched.usage_date
        """,
        [sorted(usage_dates)],
    ).fetchall()
    return usage_dates | {day for (day,) in rows}


def fee_lines(conn: duckdb.DuckDBPyConnection) -> tuple[list[FeeLine], set[date]]:
    """The fee lines on the invoices (``invoice_lines``, as rounded there), with the instant
    each takes effect, and the billing periods the invoices cover."""
    rows = conn.execute(
        """
        select fees.customer_id, fees.subscription_id, fees.billing_period_start_date,
               fees.line_type, fees.currency, lines.amount_minor, fees.line_starts_at
        from invoice_lines as lines
        inner join subscription_fee_lines as fees
            on fees.customer_id = lines.customer_id
            and fees.subscription_id = lines.line_id
            and fees.billing_period_start_date = lines.billing_period_start_date
            and fees.line_type = lines.line_type
        order by all
        """
    ).fetchall()
    periods = {
        period
        for (period,) in conn.execute(
            "select distinct billing_period_start_date from invoice_lines"
        ).fetchall()
    }
    lines = [
        FeeLine(
            customer_id=customer,
            subscription_id=subscription,
            billing_period_start_date=period,
            line_type=line_type,
            currency=currency,
            amount_minor=Decimal(amount),
            effective_at=starts_at.replace(tzinfo=UTC),  # a UTC timestamp without a zone
        )
        for customer, subscription, period, line_type, currency, amount, starts_at in rows
    ]
    return lines, periods


def non_additive_meters(conn: duckdb.DuckDBPyConnection) -> frozenset[str]:
    """Meters whose days add the change of a period's value rather than a count or sum."""
    rows = conn.execute(
        "select meter_id from price_book_meters where aggregation not in "
        f"({', '.join(repr(a) for a in sorted(ADDITIVE_AGGREGATIONS))})"
    ).fetchall()
    return frozenset(meter_id for (meter_id,) in rows)


def billable_rows(
    conn: duckdb.DuckDBPyConnection, usage_dates: set[date]
) -> list[tuple[str, str, date, str, object, int]]:
    if not usage_dates:
        return []
    return conn.execute(
        """
        select customer_id, meter_id, usage_date, currency, amount_minor_exact, quantity_units
        from billable_usage_daily
        where is_priced and usage_date in (select unnest(?::date[]))
        order by customer_id, meter_id, usage_date
        """,
        [sorted(usage_dates)],
    ).fetchall()


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[BILLABLE_USAGE, INVOICE_LINES],
    group_name="billing",
    kinds={"duckdb"},
    pool=WAREHOUSE_POOL,
    description=(
        "The ledger transactions this partition is about to post (rated amount minus what the "
        "ledger holds, per customer, meter and day), staged in the warehouse for the batch gate."
    ),
)
def ledger_usage_batch(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, ledger: LedgerResource
) -> dg.MaterializeResult:
    window = context.partition_time_window
    start, end = window.start.date(), window.end.date()
    with warehouse.connect() as conn:
        usage_dates = rerated_usage_dates(conn, touched_usage_dates(conn, start, end))
        rows = billable_rows(conn, usage_dates)
        fees, invoiced_periods = fee_lines(conn)
    rated = [
        RatedSlot(customer_id=c, meter_id=m, usage_date=d, currency=cur, amount_minor=amount)
        for c, m, d, cur, amount, _ in rows
    ]
    with ledger.open() as book:
        posted = book.cause_totals(
            USAGE_ACCRUAL_KIND, effective_at=[accrual_effective_at(day) for day in usage_dates]
        )
        posted_fees = book.cause_totals(SUBSCRIPTION_FEE_KIND)
    transactions = plan_usage_accruals(rated, posted=posted, usage_dates=usage_dates)
    fee_postings = plan_fee_postings(fees, posted=posted_fees, periods=invoiced_periods)
    credit = plan_credit(warehouse, ledger)
    with warehouse.connect() as conn:
        entries = ledger_batches.write_batch(
            conn, start, end, [*transactions, *fee_postings, *credit.postings]
        )
    crash_point("ledger.after_batch_staged")
    return dg.MaterializeResult(
        metadata={
            "usage_dates": len(usage_dates),
            "slots_rated": len(rated),
            "transactions_planned": len(transactions) + len(fee_postings) + len(credit.postings),
            "fee_transactions_planned": len(fee_postings),
            "entries_planned": entries,
            "credit_grants": credit.grants,
            "credit_transactions_planned": len(credit.postings),
        }
    )


@dataclass(frozen=True)
class CreditPlan:
    grants: int
    postings: list[Transaction]


def plan_credit(warehouse: WarehouseResource, ledger: LedgerResource) -> CreditPlan:
    """Apply the approved credit grants the rating saw (``credit_grants``) to their customers'
    rated usage, in the order dbt gives (``int_credit_grant_slots``; pricing/credits.py draws
    them down), record the allocation in the warehouse and plan the ledger's differences."""
    with warehouse.connect() as conn:
        grants = credit_tables.read_grants(conn)
        charges, rated_through = credit_tables.usage_charges(
            conn, {grant.terms.customer_id for grant in grants}
        )
        orders = credit_tables.spending_orders(conn) if grants else {}
    allocation = apply_credits(
        [g.terms for g in grants], charges, rated_through=rated_through, spending_orders=orders
    )
    postings: list[Transaction] = []
    if grants:
        with ledger.open() as book:
            postings = plan_credit_postings(
                grants,
                allocation,
                posted_applications=book.cause_totals(CREDIT_APPLICATION_KIND),
                posted_expiries=book.cause_totals(CREDIT_EXPIRY_KIND),
            )
    with warehouse.connect() as conn:
        credit_tables.write_allocation(conn, allocation)
    return CreditPlan(grants=len(grants), postings=postings)


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="billing",
    kinds={"postgres", "duckdb"},
    pool=WAREHOUSE_POOL,
    description=(
        "The approved credit grants (billing API), copied whole into the warehouse before the "
        "rating: dbt says which grants may pay for which usage slot and in which order "
        "(int_credit_grant_slots), and the ledger batch draws them down."
    ),
)
def credit_grants(ledger: LedgerResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    with psycopg.connect(ledger.resolved_url(), autocommit=True) as pg:
        grants = approved_credit_grants(pg)
    with warehouse.connect() as conn:
        written = credit_tables.write_grants(conn, grants)
    return dg.MaterializeResult(
        metadata={"grants": written, "customers": len({g.terms.customer_id for g in grants})}
    )


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[ledger_usage_batch],
    group_name="billing",
    kinds={"postgres"},
    description=(
        "Usage accruals in the double-entry ledger (customer unbilled receivable / usage "
        "revenue), one revision per change of a customer, meter and day's rated amount: the "
        "staged batch, posted once it passed its gate."
    ),
)
def ledger_usage_accruals(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, ledger: LedgerResource
) -> dg.MaterializeResult:
    window = context.partition_time_window
    with warehouse.connect() as conn:
        transactions = ledger_batches.read_batch(conn, window.start.date(), window.end.date())
    with ledger.open() as book:
        result = book.post_many(transactions)
        crash_point("ledger.after_post_before_verify")
        report = book.verify()
    context.log.info(
        f"Ledger: {result.created} transactions posted, {result.existing} already there"
    )
    return dg.MaterializeResult(
        metadata={
            "transactions_posted": result.created,
            "transactions_already_posted": result.existing,
            "ledger_transactions": report.transactions,
            "ledger_content_hash": report.content_hash,
        }
    )


@dataclass(frozen=True)
class StripeUsagePlan:
    """What a run sends to Stripe: the usage dates it planned, the intents (increases only),
    the slots that went down since they were sent, and the slots it holds back."""

    usage_dates: set[date]
    intents: list[OutboxIntent]
    decreases: list[str]
    held: list[HeldSlot]


def plan_stripe_usage(
    conn: duckdb.DuckDBPyConnection,
    outbox_conn: psycopg.Connection,
    *,
    raw_usage_dir: Path,
    touched: set[date],
) -> StripeUsagePlan:
    """Plan the touched usage dates and those with a slot held by an earlier run (a held slot
    is planned again whichever days a run touches, so it is sent once its days ran); a slot an
    outstanding arrival day could still lower is held, not sent (``orchestration.stripe_holds``)."""
    usage_dates = touched | outbox.held_usage_dates(outbox_conn)
    # A day of a max, latest or unique-count meter adds the change of the period's value, so
    # usage arriving for one day can change the later days of its period too.
    changing = non_additive_meters(conn)
    planned_dates = rerated_usage_dates(conn, usage_dates) if changing else usage_dates
    slots, held = hold_unsettled(
        (
            MeterSlot(
                customer_id=c,
                meter_id=m,
                usage_date=d,
                quantity=int(quantity),
                may_decrease=m in changing,
            )
            for c, m, d, _, _, quantity in billable_rows(conn, planned_dates)
            if d in usage_dates or m in changing
        ),
        unsettled_customer_days(conn, raw_usage_dir, planned_dates),
    )
    intents, decreases = plan_meter_events(
        slots,
        recorded=outbox.slot_totals(outbox_conn, METER_EVENT_OPERATION),
        usage_dates=planned_dates,
    )
    return StripeUsagePlan(planned_dates, intents, decreases, held)


def record_stripe_usage_plan(outbox_conn: psycopg.Connection, plan: StripeUsagePlan) -> int:
    """Record the plan's intents and held slots in one transaction; returns the new intents."""
    with outbox_conn.transaction():
        recorded = outbox.record_intents(outbox_conn, plan.intents)
        outbox.replace_held_slots(outbox_conn, usage_dates=plan.usage_dates, held=plan.held)
    return recorded


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[BILLABLE_USAGE, ledger_usage_accruals, PRICE_BOOK_METERS],
    group_name="billing",
    kinds={"stripe"},
    description=(
        "Usage sent to Stripe Billing Meters through the outbox: one meter event per customer, "
        "meter and day revision, with a deterministic identifier, in batches of 100 on the v2 "
        "meter event stream (or one per request on v1). A slot that an arrival day not yet "
        "ingested could still lower is held (stripe_sync.held_meter_slots) until that day ran."
    ),
)
def stripe_meter_events(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    ledger: LedgerResource,
    stripe: StripeResource,
) -> dg.MaterializeResult:
    window = context.partition_time_window
    with (
        psycopg.connect(ledger.resolved_url(), autocommit=True) as pg,
        warehouse.connect() as conn,
    ):
        outbox.ensure_schema(pg)
        touched = touched_usage_dates(conn, window.start.date(), window.end.date())
        plan = plan_stripe_usage(
            conn, pg, raw_usage_dir=get_settings().raw_usage_dir, touched=touched
        )
        meters = conn.execute(
            "select meter_id, description from price_book_meters order by meter_id"
        ).fetchall()
    client = stripe.client()
    ensure_meters(client, meters)
    crash_point("stripe.after_meters_ensured")
    with psycopg.connect(ledger.resolved_url(), autocommit=True) as conn:
        recorded = record_stripe_usage_plan(conn, plan)
        crash_point("stripe.after_intents_recorded")
        if stripe.meter_events_api == "stream":
            report = send_pending_meter_events_stream(conn, client, stripe.client_with_key)
        else:
            report = send_pending_meter_events(conn, client)
        states = outbox.state_counts(conn)
    crash_point("stripe.after_send")
    for decrease in plan.decreases:
        context.log.warning(f"Usage went down after it was sent to Stripe: {decrease}")
    waiting_for = sorted({day.isoformat() for slot in plan.held for day in slot.waiting_for})
    if plan.held:
        context.log.warning(
            f"{len(plan.held)} meter slots held back: arrival days {', '.join(waiting_for)} "
            "have raw files not ingested yet, which could still lower them (a meter event "
            "cannot be lowered once sent); a run after those days sends them."
        )
    context.log.info(
        f"Stripe: {recorded} new intents, {report.sent} sent in {report.attempts} attempts, "
        f"{report.dead} dead, {report.still_pending} still pending, {len(plan.held)} slots held"
    )
    if report.still_pending:
        raise dg.Failure(
            f"{report.still_pending} meter events could not be sent (Stripe kept failing "
            "transiently); they stay pending in stripe_sync.outbox and the next run sends them.",
        )
    return dg.MaterializeResult(
        metadata={
            "intents_recorded": recorded,
            "meter_events_sent": report.sent,
            "send_attempts": report.attempts,
            "dead_letters": report.dead,
            "usage_decreases_not_sent": dg.MetadataValue.json(plan.decreases),
            "slots_held": len(plan.held),
            "held_waiting_for_arrival_days": dg.MetadataValue.json(waiting_for),
            "outbox_states": dg.MetadataValue.json(states),
        }
    )

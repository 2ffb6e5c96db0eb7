"""The effects: ledger postings and Stripe meter events for the usage dates a run touched.

Both compare what is rated now with what was already posted or sent, and write only the
difference under keys derived from the slot and revision, so any re-run is harmless.
"""

from datetime import date

import dagster as dg
import duckdb
import psycopg

from crash_points import crash_point
from ledger.usage_accruals import (
    USAGE_ACCRUAL_KIND,
    RatedSlot,
    accrual_effective_at,
    plan_usage_accruals,
)
from orchestration import ledger_batches
from orchestration.assets.ingestion import WAREHOUSE_POOL
from orchestration.partitions import daily_partitions
from orchestration.resources import LedgerResource, StripeResource, WarehouseResource
from stripe_sync import outbox
from stripe_sync.meter_event_stream import send_pending_meter_events_stream
from stripe_sync.meter_events import (
    METER_EVENT_OPERATION,
    MeterSlot,
    ensure_meters,
    plan_meter_events,
    send_pending_meter_events,
)

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
            on rated.billing_period_start_date = date_trunc('month', touched.usage_date)
            and rated.usage_date > touched.usage_date
        """,
        [sorted(usage_dates)],
    ).fetchall()
    return usage_dates | {day for (day,) in rows}


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
    rated = [
        RatedSlot(customer_id=c, meter_id=m, usage_date=d, currency=cur, amount_minor=amount)
        for c, m, d, cur, amount, _ in rows
    ]
    with ledger.open() as book:
        posted = book.cause_totals(
            USAGE_ACCRUAL_KIND, effective_at=[accrual_effective_at(day) for day in usage_dates]
        )
    transactions = plan_usage_accruals(rated, posted=posted, usage_dates=usage_dates)
    with warehouse.connect() as conn:
        entries = ledger_batches.write_batch(conn, start, end, transactions)
    crash_point("ledger.after_batch_staged")
    return dg.MaterializeResult(
        metadata={
            "usage_dates": len(usage_dates),
            "slots_rated": len(rated),
            "transactions_planned": len(transactions),
            "entries_planned": entries,
        }
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


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[BILLABLE_USAGE, ledger_usage_accruals, PRICE_BOOK_METERS],
    group_name="billing",
    kinds={"stripe"},
    description=(
        "Usage sent to Stripe Billing Meters through the outbox: one meter event per customer, "
        "meter and day revision, with a deterministic identifier, in batches of 100 on the v2 "
        "meter event stream (or one per request on v1)."
    ),
)
def stripe_meter_events(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    ledger: LedgerResource,
    stripe: StripeResource,
) -> dg.MaterializeResult:
    window = context.partition_time_window
    with warehouse.connect() as conn:
        usage_dates = touched_usage_dates(conn, window.start.date(), window.end.date())
        rows = billable_rows(conn, usage_dates)
        meters = conn.execute(
            "select meter_id, description from price_book_meters order by meter_id"
        ).fetchall()
    slots = [
        MeterSlot(customer_id=c, meter_id=m, usage_date=d, quantity=int(quantity))
        for c, m, d, _, _, quantity in rows
    ]
    client = stripe.client()
    ensure_meters(client, meters)
    crash_point("stripe.after_meters_ensured")
    with psycopg.connect(ledger.resolved_url(), autocommit=True) as conn:
        outbox.ensure_schema(conn)
        intents, decreases = plan_meter_events(
            slots,
            recorded=outbox.slot_totals(conn, METER_EVENT_OPERATION),
            usage_dates=usage_dates,
        )
        recorded = outbox.record_intents(conn, intents)
        crash_point("stripe.after_intents_recorded")
        if stripe.meter_events_api == "stream":
            report = send_pending_meter_events_stream(conn, client, stripe.client_with_key)
        else:
            report = send_pending_meter_events(conn, client)
        states = outbox.state_counts(conn)
    crash_point("stripe.after_send")
    for decrease in decreases:
        context.log.warning(f"Usage went down after it was sent to Stripe: {decrease}")
    context.log.info(
        f"Stripe: {recorded} new intents, {report.sent} sent in {report.attempts} attempts, "
        f"{report.dead} dead, {report.still_pending} still pending"
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
            "usage_decreases_not_sent": dg.MetadataValue.json(decreases),
            "outbox_states": dg.MetadataValue.json(states),
        }
    )

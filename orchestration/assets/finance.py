"""The ledger in the warehouse, for the marts finance reads next to the rated usage."""

from datetime import date, datetime, timedelta

import dagster as dg
import duckdb
import psycopg

from crash_points import crash_point
from ledger.replication import replicate_ledger
from orchestration.assets.billing import (
    ledger_usage_accruals,
    stripe_meter_events,
    touched_usage_dates,
)
from orchestration.assets.ingestion import WAREHOUSE_POOL
from orchestration.partitions import daily_partitions
from orchestration.resources import LedgerResource, StripeResource, WarehouseResource
from stripe_sync import outbox
from stripe_sync.meter_events import ensure_meters
from stripe_sync.meter_usage import ensure_schema as ensure_meter_usage_schema
from stripe_sync.meter_usage import month_bounds, read_meter_usage, store_meter_usage
from stripe_sync.replication import copy_outbox_slot_totals

STRIPE_OUTBOX_SLOTS = dg.AssetKey("stripe_outbox_slots")
# One asset per replicated table (dbt sources map to them one to one).
LEDGER_REPLICA_TABLES = {
    "transactions": dg.AssetKey("ledger_replica_transactions"),
    "entries": dg.AssetKey("ledger_replica_entries"),
    "dunning_events": dg.AssetKey("ledger_replica_dunning_events"),
}


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            key,
            description=(
                f"The ledger's {table} copied into the warehouse (ledger.{table}), "
                "incrementally: each run copies every row the replica lacks, whichever "
                "partition it runs for."
            ),
            deps=[ledger_usage_accruals],
            group_name="finance",
            kinds={"duckdb", "postgres"},
        )
        for table, key in LEDGER_REPLICA_TABLES.items()
    ],
    name="ledger_replica",
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=WAREHOUSE_POOL,
)
def ledger_replica(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, ledger: LedgerResource
):
    with (
        psycopg.connect(ledger.resolved_url(), autocommit=True) as pg,
        warehouse.connect() as conn,
    ):
        result = replicate_ledger(pg, conn)
    crash_point("finance.after_replica")
    context.log.info(
        f"Ledger replica: {result.transactions_copied} transactions and "
        f"{result.entries_copied} entries copied; {result.transactions_in_replica} in the replica"
    )
    copied = {
        "transactions": result.transactions_copied,
        "entries": result.entries_copied,
        "dunning_events": result.dunning_events_copied,
    }
    for table, key in LEDGER_REPLICA_TABLES.items():
        yield dg.MaterializeResult(
            asset_key=key,
            metadata={
                "rows_copied": copied[table],
                "transactions_in_replica": result.transactions_in_replica,
                "ledger_high_mark": result.high_mark,
            },
        )


@dg.asset(
    key=STRIPE_OUTBOX_SLOTS,
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[stripe_meter_events],
    group_name="finance",
    kinds={"duckdb", "postgres"},
    pool=WAREHOUSE_POOL,
    description=(
        "Per customer-meter-day slot, the quantity the Stripe outbox has sent, has pending and "
        "has dead (stripe_sync.outbox_slots), replaced on each run."
    ),
)
def stripe_outbox_slots(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, ledger: LedgerResource
) -> dg.MaterializeResult:
    with (
        psycopg.connect(ledger.resolved_url(), autocommit=True) as pg,
        warehouse.connect() as conn,
    ):
        slots = copy_outbox_slot_totals(pg, conn)
    context.log.info(f"Stripe outbox: {slots} slots copied to the warehouse")
    return dg.MaterializeResult(metadata={"slots": slots})


STRIPE_METER_USAGE = dg.AssetKey("stripe_meter_usage")
# Stripe takes meter events up to 35 days old; older usage dates are never sent again.
STRIPE_METER_EVENT_MAX_AGE_DAYS = 35


@dg.asset(
    key=STRIPE_METER_USAGE,
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[stripe_meter_events],
    group_name="finance",
    kinds={"stripe", "duckdb"},
    pool=WAREHOUSE_POOL,
    description=(
        "What Stripe's Billing Meters counted per customer, meter and day "
        "(stripe_sync.meter_usage_daily), read back from meter event summaries for every "
        "customer and meter the partition rated, over the usage days it touched."
    ),
)
def stripe_meter_usage(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    ledger: LedgerResource,
    stripe: StripeResource,
) -> dg.MaterializeResult:
    window = context.partition_time_window
    oldest_sendable = window.start.date() - timedelta(days=STRIPE_METER_EVENT_MAX_AGE_DAYS)
    with psycopg.connect(ledger.resolved_url(), autocommit=True) as pg:
        outbox.ensure_schema(pg)
        last_sent = outbox.last_sent_per_usage_date(pg, since=oldest_sendable)
    with warehouse.connect() as conn:
        ensure_meter_usage_schema(conn)
        usage_dates = touched_usage_dates(conn, window.start.date(), window.end.date())
        usage_dates |= sent_since_read(conn, last_sent)
        # Stripe's counts can only have changed where this partition rated (and sent) usage:
        # read those customers and meters, over the touched days' range.
        ranges = [
            (min(days), max(days) + timedelta(days=1))
            for days in _days_by_period(usage_dates).values()
        ]
        billed = {
            (first, end): conn.execute(
                "select distinct customer_id, meter_id from billable_usage_daily "
                "where is_priced and usage_date in (select unnest(?::date[]))",
                [sorted(day for day in usage_dates if first <= day < end)],
            ).fetchall()
            for first, end in ranges
        }
        meters = conn.execute("select meter_id, description from price_book_meters").fetchall()
    client = stripe.client()
    stripe_meter_ids = ensure_meters(client, meters)
    read = {
        days: read_meter_usage(client, stripe_meter_ids, billed[days], *days) for days in ranges
    }
    crash_point("finance.after_meter_usage_read")
    with warehouse.connect() as conn:
        stored = sum(store_meter_usage(conn, billed[days], *days, read[days]) for days in ranges)
    pairs = sum(len(pairs) for pairs in billed.values())
    context.log.info(f"Stripe meter usage: {stored} metered days read for {pairs} meters")
    return dg.MaterializeResult(
        metadata={
            "days_read": [f"{first}..{end - timedelta(days=1)}" for first, end in ranges],
            "customer_meters_read": pairs,
            "metered_days": stored,
        }
    )


def sent_since_read(conn: duckdb.DuckDBPyConnection, last_sent: dict[date, datetime]) -> set[date]:
    """Usage dates with a meter event sent after Stripe's count of that date was last read:
    a slot held back is sent by the run of another arrival day, which does not touch its
    date."""
    if not last_sent:
        return set()
    read = dict(
        conn.execute(
            "select usage_date, max(read_at) from stripe_sync.meter_usage_daily "
            "where usage_date in (select unnest(?::date[])) group by usage_date",
            [sorted(last_sent)],
        ).fetchall()
    )
    return {day for day, sent_at in last_sent.items() if day not in read or read[day] < sent_at}


def _days_by_period(days: set[date]) -> dict[date, list[date]]:
    """Usage days grouped by calendar month, so that days far apart are read as a few short
    ranges, not one long one (Stripe's daily summaries do not depend on billing periods)."""
    grouped: dict[date, list[date]] = {}
    for day in sorted(days):
        grouped.setdefault(month_bounds(day)[0], []).append(day)
    return grouped

"""Assets that bring raw files into the warehouse: Stripe exports and usage logs."""

from datetime import date

import dagster as dg

from crash_points import crash_point
from ingestion.stripe_exports import (
    STRIPE_EXPORT_TABLES,
    STRIPE_INVOICE_TABLES,
    load_stripe_exports,
)
from ingestion.usage_events import IngestionResult, ingest_usage_day
from orchestration.partitions import daily_partitions
from orchestration.resources import WarehouseResource
from orchestration.settings import get_settings

WAREHOUSE_POOL = "duckdb_warehouse"


def partition_dates(context: dg.AssetExecutionContext) -> list[date]:
    """The arrival dates of the run: one partition, or a whole range in a single-run backfill."""
    window = context.partition_time_window
    days = []
    day = window.start.date()
    while day < window.end.date():  # the window's end is exclusive
        days.append(day)
        day = date.fromordinal(day.toordinal() + 1)
    return days


STRIPE_EXPORT_ASSETS = {
    table: dg.AssetKey(f"stripe_{table}")
    for table in (*STRIPE_EXPORT_TABLES, *STRIPE_INVOICE_TABLES)
}


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            key,
            description=f"Stripe `{table}` as exported (stripe_raw.{table}, Stripe field names).",
            group_name="ingestion",
            kinds={"duckdb", "stripe"},
        )
        for table, key in STRIPE_EXPORT_ASSETS.items()
    ],
    name="stripe_exports",
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=WAREHOUSE_POOL,
)
def stripe_exports(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    """Load the Stripe CSV exports into ``stripe_raw``; a later export replaces an earlier one."""
    with warehouse.connect() as conn:
        row_counts = load_stripe_exports(conn, stripe_dir=get_settings().raw_stripe_dir)
    crash_point("ingestion.after_stripe_exports")
    context.log.info(f"Loaded Stripe exports: {row_counts}")
    for table, key in STRIPE_EXPORT_ASSETS.items():
        yield dg.MaterializeResult(asset_key=key, metadata={"rows": row_counts[table]})


ACCEPTED_USAGE_EVENTS = dg.AssetKey("accepted_usage_events")
USAGE_FILE_COUNTS = dg.AssetKey("usage_file_counts")
PARTITION_USAGE_DATES = dg.AssetKey("partition_usage_dates")


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            ACCEPTED_USAGE_EVENTS,
            description=(
                "One row per accepted usage event (the first copy of its event_id across all "
                "days), validated; bad lines are quarantined with a reason "
                "(ingest.quarantined_usage_lines)."
            ),
            deps=[STRIPE_EXPORT_ASSETS["customers"]],
            group_name="ingestion",
            kinds={"duckdb"},
        ),
        dg.AssetSpec(
            USAGE_FILE_COUNTS,
            description="One row per raw file: raw = accepted + duplicates + quarantined lines.",
            group_name="ingestion",
            kinds={"duckdb"},
        ),
        dg.AssetSpec(
            PARTITION_USAGE_DATES,
            description="Which usage dates each arrival day touched (late events included).",
            group_name="ingestion",
            kinds={"duckdb"},
        ),
    ],
    name="usage_events",
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=WAREHOUSE_POOL,
)
def usage_events(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    """Ingest each arrival day of the run: validate, deduplicate across days, quarantine."""
    settings = get_settings()
    results: list[IngestionResult] = []
    with warehouse.connect() as conn:
        for arrival_date in partition_dates(context):
            result = ingest_usage_day(
                conn, raw_usage_dir=settings.raw_usage_dir, arrival_date=arrival_date
            )
            context.log.info(
                f"{arrival_date}: {result.raw_lines} raw lines in {result.files} files -> "
                f"{result.accepted_lines} accepted, {result.duplicate_lines} duplicates, "
                f"{result.quarantined_lines} quarantined; usage dates touched: "
                f"{[d.isoformat() for d in result.usage_dates]}"
            )
            results.append(result)
            crash_point("ingestion.after_day_committed")
    yield dg.MaterializeResult(
        asset_key=ACCEPTED_USAGE_EVENTS,
        metadata={
            "accepted_lines": sum(r.accepted_lines for r in results),
            "duplicate_lines": sum(r.duplicate_lines for r in results),
            "quarantined_lines": sum(r.quarantined_lines for r in results),
        },
    )
    yield dg.MaterializeResult(
        asset_key=USAGE_FILE_COUNTS,
        metadata={
            "files": sum(r.files for r in results),
            "raw_lines": sum(r.raw_lines for r in results),
        },
    )
    yield dg.MaterializeResult(
        asset_key=PARTITION_USAGE_DATES,
        metadata={
            "usage_dates_touched": dg.MetadataValue.json(
                sorted({d.isoformat() for r in results for d in r.usage_dates})
            ),
        },
    )

"""Assets that bring raw files into the warehouse: Stripe exports and usage logs."""

from __future__ import annotations

from datetime import date

import dagster as dg

from ingestion.stripe_exports import load_stripe_exports
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


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=WAREHOUSE_POOL,
    group_name="ingestion",
    kinds={"duckdb", "stripe"},
    description="Stripe exports (customers, products, prices, subscriptions, items) as loaded.",
)
def stripe_exports(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    with warehouse.connect() as conn:
        row_counts = load_stripe_exports(conn, stripe_dir=get_settings().raw_stripe_dir)
    context.log.info(f"Loaded Stripe exports: {row_counts}")
    return dg.MaterializeResult(metadata={f"rows_{t}": n for t, n in row_counts.items()})


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[stripe_exports],
    pool=WAREHOUSE_POOL,
    group_name="ingestion",
    kinds={"duckdb"},
    description=(
        "Raw usage lines of each arrival day: validated, deduplicated by event_id across all "
        "days, bad lines quarantined with a reason; raw = accepted + duplicates + quarantined."
    ),
)
def usage_events(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
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
    return dg.MaterializeResult(
        metadata={
            "files": sum(r.files for r in results),
            "raw_lines": sum(r.raw_lines for r in results),
            "accepted_lines": sum(r.accepted_lines for r in results),
            "duplicate_lines": sum(r.duplicate_lines for r in results),
            "quarantined_lines": sum(r.quarantined_lines for r in results),
            "usage_dates_touched": dg.MetadataValue.json(
                sorted({d.isoformat() for r in results for d in r.usage_dates})
            ),
        }
    )

"""The ledger in the warehouse, for the marts finance reads next to the rated usage."""

import dagster as dg
import psycopg

from ledger.replication import replicate_ledger
from orchestration.assets.billing import ledger_usage_accruals, stripe_meter_events
from orchestration.assets.ingestion import WAREHOUSE_POOL
from orchestration.partitions import daily_partitions
from orchestration.resources import LedgerResource, WarehouseResource
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

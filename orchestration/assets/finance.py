"""The ledger in the warehouse, for the marts finance reads next to the rated usage."""

import dagster as dg
import psycopg

from ledger.replication import replicate_ledger
from orchestration.assets.billing import ledger_usage_accruals
from orchestration.assets.ingestion import WAREHOUSE_POOL
from orchestration.partitions import daily_partitions
from orchestration.resources import LedgerResource, WarehouseResource


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[ledger_usage_accruals],
    group_name="finance",
    kinds={"duckdb", "postgres"},
    pool=WAREHOUSE_POOL,
    description=(
        "The ledger's transactions, entries, accounts and dunning events copied into the "
        "warehouse (schema ledger), incrementally: each run copies every row the replica lacks, "
        "whichever partition it runs for."
    ),
)
def ledger_replica(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, ledger: LedgerResource
) -> dg.MaterializeResult:
    with (
        psycopg.connect(ledger.resolved_url(), autocommit=True) as pg,
        warehouse.connect() as conn,
    ):
        result = replicate_ledger(pg, conn)
    context.log.info(
        f"Ledger replica: {result.transactions_copied} transactions and "
        f"{result.entries_copied} entries copied; {result.transactions_in_replica} in the replica"
    )
    return dg.MaterializeResult(
        metadata={
            "transactions_copied": result.transactions_copied,
            "entries_copied": result.entries_copied,
            "dunning_events_copied": result.dunning_events_copied,
            "transactions_in_replica": result.transactions_in_replica,
            "ledger_high_mark": result.high_mark,
        }
    )

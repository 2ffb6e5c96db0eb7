"""The billing API's view of the warehouse: after the finance marts, each run publishes a
read-only Parquet copy of the tables the API reads (api/snapshot.py says why the API never opens
the warehouse file). Publication is one rename, so a reader sees the old copy or the new one."""

from pathlib import Path

import dagster as dg

from api.snapshot import publish_snapshot
from orchestration.assets.dbt import (
    finance_dbt_models,
    meterbook_dbt_models,
    reconciliation_dbt_models,
)
from orchestration.assets.finance import stripe_meter_usage
from orchestration.assets.ingestion import WAREHOUSE_POOL
from orchestration.partitions import daily_partitions
from orchestration.resources import WarehouseResource


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[finance_dbt_models, meterbook_dbt_models, reconciliation_dbt_models, stripe_meter_usage],
    group_name="api",
    kinds={"parquet"},
    pool=WAREHOUSE_POOL,
    description=(
        "The tables the billing API reads (events, rated usage, invoice lines, anomalies, "
        "reconciliation), copied out of the warehouse after the run's last mart and made "
        "current in one rename; older copies are pruned."
    ),
)
def api_snapshot(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    if warehouse.api_snapshot_dir is None:
        raise dg.Failure("The warehouse resource has no api_snapshot_dir to publish to.")
    with warehouse.connect() as conn:
        published = publish_snapshot(conn, Path(warehouse.api_snapshot_dir))
    context.log.info(f"API snapshot published: {published.path}")
    return dg.MaterializeResult(
        metadata={
            "path": str(published.path),
            "published_at": published.published_at.isoformat(),
            "tables": len(published.rows),
            "rows": sum(published.rows.values()),
            "missing_tables": ", ".join(published.missing) or "none",
        }
    )

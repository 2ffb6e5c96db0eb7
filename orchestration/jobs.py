"""The daily billing job and its schedule."""

from __future__ import annotations

import dagster as dg

from orchestration.partitions import daily_partitions

daily_billing_job = dg.define_asset_job(
    name="daily_billing",
    selection=dg.AssetSelection.all(),
    partitions_def=daily_partitions,
    description="Ingest one arrival day, rate it with dbt, post the ledger and send Stripe usage.",
)

# Hour files of a day are complete shortly after midnight UTC; run the finished day at 01:00.
daily_billing_schedule = dg.build_schedule_from_partitioned_job(
    daily_billing_job, hour_of_day=1, minute_of_hour=0
)

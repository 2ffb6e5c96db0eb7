"""The daily billing job, the Stripe reconciliation job and their schedules.

Billing (ingest → rate → gate → ledger → Stripe) and reconciliation (read Stripe's meter counts
back, compare them with Meterbook's and the ledger's) are two jobs over the same daily
partitions. Reading the counts back is one meter event summary request per customer and meter
the day rated (24,000 for 2,000 customers): on the billing path it was the slowest step, it is
bounded by Stripe's read rate limit rather than by the day's data, and Stripe aggregates meter
events asynchronously, so counts read the moment the events are sent can still lag. Billing
never waits on it; reconciliation runs an hour after billing, and again whenever it is started.
``meterbook run`` and ``meterbook backfill`` bill chunk by chunk, then reconcile the whole range.
"""

from __future__ import annotations

import dagster as dg

from orchestration.assets.api_snapshot import api_snapshot
from orchestration.assets.dbt import reconciliation_dbt_models
from orchestration.assets.finance import stripe_meter_usage
from orchestration.partitions import daily_partitions

RECONCILIATION_ASSETS = dg.AssetSelection.assets(stripe_meter_usage, reconciliation_dbt_models)

daily_billing_job = dg.define_asset_job(
    name="daily_billing",
    selection=dg.AssetSelection.all() - RECONCILIATION_ASSETS,
    partitions_def=daily_partitions,
    description="Ingest one arrival day, rate it with dbt, post the ledger and send Stripe usage.",
)

stripe_reconciliation_job = dg.define_asset_job(
    name="stripe_reconciliation",
    # The API snapshot again, so that the API serves the reconciliation just computed.
    selection=RECONCILIATION_ASSETS | dg.AssetSelection.assets(api_snapshot),
    partitions_def=daily_partitions,
    description=(
        "Read back what Stripe's meters counted for the day's customers and meters and compare "
        "it with Meterbook's invoice lines and the ledger (the finance reconciliation marts)."
    ),
)

# Hour files of a day are complete shortly after midnight UTC; run the finished day at 01:00.
daily_billing_schedule = dg.build_schedule_from_partitioned_job(
    daily_billing_job, hour_of_day=1, minute_of_hour=0
)
# An hour later, when the day's meter events have long been aggregated by Stripe.
stripe_reconciliation_schedule = dg.build_schedule_from_partitioned_job(
    stripe_reconciliation_job, hour_of_day=2, minute_of_hour=0
)

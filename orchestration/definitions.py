"""The code location: assembles assets, checks, jobs, schedules and resources, nothing more."""

from __future__ import annotations

import dagster as dg

from orchestration.anomaly_checks import (
    ingest_share_anomalies,
    revenue_change_anomalies,
    usage_volume_anomalies,
    usage_without_subscription,
)
from orchestration.assets.api_snapshot import api_snapshot
from orchestration.assets.billing import (
    credit_grants,
    ledger_usage_accruals,
    ledger_usage_batch,
    stripe_meter_events,
)
from orchestration.assets.dbt import (
    finance_dbt_models,
    meterbook_dbt_models,
    reconciliation_dbt_models,
)
from orchestration.assets.finance import ledger_replica, stripe_meter_usage, stripe_outbox_slots
from orchestration.assets.ingestion import stripe_exports, usage_events
from orchestration.checks import (
    daily_freshness_checks,
    freshness_checks_sensor,
    ledger_balanced,
    metering_lag_summary,
    reconciliation_summary,
    stripe_outbox_clear,
    usage_lines_conserved,
)
from orchestration.gates import GX_GATES
from orchestration.jobs import (
    daily_billing_job,
    daily_billing_schedule,
    stripe_reconciliation_job,
    stripe_reconciliation_schedule,
)
from orchestration.resources import build_resources
from orchestration.settings import Settings, get_settings


def build_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=[
            stripe_exports,
            usage_events,
            credit_grants,
            meterbook_dbt_models,
            ledger_usage_batch,
            ledger_usage_accruals,
            stripe_meter_events,
            ledger_replica,
            stripe_outbox_slots,
            stripe_meter_usage,
            finance_dbt_models,
            reconciliation_dbt_models,
            api_snapshot,
        ],
        asset_checks=[
            *GX_GATES,
            usage_lines_conserved,
            ledger_balanced,
            stripe_outbox_clear,
            metering_lag_summary,
            reconciliation_summary,
            usage_volume_anomalies,
            ingest_share_anomalies,
            usage_without_subscription,
            revenue_change_anomalies,
            *daily_freshness_checks,
        ],
        sensors=[freshness_checks_sensor],
        jobs=[daily_billing_job, stripe_reconciliation_job],
        schedules=[daily_billing_schedule, stripe_reconciliation_schedule],
        resources=build_resources(settings),
        # Steps of a run share one process: DuckDB allows one writing process per file.
        executor=dg.in_process_executor,
    )


defs = build_definitions(get_settings())

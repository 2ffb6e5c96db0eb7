"""Anomaly warnings: unusual data the data team should look at, never a reason to stop billing.

Each check runs one detector of ``quality/anomalies.py`` over the partition, keeps its findings
in ``quality.anomaly_findings`` (a re-run replaces them) and shows them in the Dagster UI as a
short table. Thresholds come from ``quality/thresholds.toml`` (or METERBOOK_QUALITY_CONFIG).
"""

from collections.abc import Callable
from datetime import date

import dagster as dg

from orchestration.assets.billing import BILLABLE_USAGE
from orchestration.assets.ingestion import USAGE_FILE_COUNTS, WAREHOUSE_POOL
from orchestration.partitions import daily_partitions
from orchestration.quality import anomalies
from orchestration.quality.thresholds import Thresholds, load_thresholds
from orchestration.resources import WarehouseResource

Detector = Callable[..., anomalies.Detection]
MAX_TABLE_ROWS = 20


def _warn_on_findings(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource, detect: Detector
) -> dg.AssetCheckResult:
    """Run ``detect`` over the partition, record its findings, and report them as a warning."""
    window = context.partition_time_window
    thresholds: Thresholds = load_thresholds()
    with warehouse.connect() as conn:
        detection = detect(
            conn, start=window.start.date(), end=window.end.date(), thresholds=thresholds
        )
        anomalies.record_findings(conn, detection.kind, detection.days, detection.findings)
    return dg.AssetCheckResult(
        passed=not detection.findings,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "findings": len(detection.findings),
            "findings_table": dg.MetadataValue.md(findings_table(detection.findings)),
            "days_judged": dg.MetadataValue.json([_day(d) for d in detection.days]),
            "rows_judged": detection.examined,
            "thresholds": dg.MetadataValue.json(detection.thresholds),
        },
    )


def findings_table(findings: tuple[anomalies.Finding, ...]) -> str:
    """The findings as a markdown table, the first ``MAX_TABLE_ROWS`` of them."""
    if not findings:
        return "No findings."
    lines = [
        "| day | customer | meter | observed | expected |",
        "|---|---|---|---|---|",
        *(
            f"| {_day(f.finding_day)} | {_cell(f.customer_id)} | {_cell(f.meter_id)} "
            f"| {_cell(f.observed)} | {_cell(f.expected)} |"
            for f in findings[:MAX_TABLE_ROWS]
        ),
    ]
    if len(findings) > MAX_TABLE_ROWS:
        lines.append(
            f"\n…and {len(findings) - MAX_TABLE_ROWS:,} more in `quality.anomaly_findings`."
        )
    return "\n".join(lines) + "\n"


def _day(day: date) -> str:
    return day.isoformat()


def _cell(value: str | None) -> str:
    return "—" if value is None else value.replace("|", "\\|")


@dg.asset_check(
    asset=BILLABLE_USAGE,
    blocking=False,
    partitions_def=daily_partitions,
    pool=WAREHOUSE_POOL,
    description=(
        "Warns when a customer's daily quantity of a meter on a usage date this partition "
        "touched leaves mean ± k·stddev of the days before (volume_* in thresholds.toml)."
    ),
)
def usage_volume_anomalies(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    return _warn_on_findings(context, warehouse, anomalies.detect_volume_anomalies)


@dg.asset_check(
    asset=USAGE_FILE_COUNTS,
    blocking=False,
    partitions_def=daily_partitions,
    pool=WAREHOUSE_POOL,
    description=(
        "Warns when an arrival day's share of quarantined or of duplicate raw lines is above "
        "max_quarantined_share / max_duplicate_share (thresholds.toml)."
    ),
)
def ingest_share_anomalies(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    return _warn_on_findings(context, warehouse, anomalies.detect_ingest_share_anomalies)


@dg.asset_check(
    asset=BILLABLE_USAGE,
    blocking=False,
    partitions_def=daily_partitions,
    pool=WAREHOUSE_POOL,
    description=(
        "Warns about customers with usage on a touched date that is not billed: no "
        "subscription in force that day, no plan on it, or no price for the meter."
    ),
)
def usage_without_subscription(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    return _warn_on_findings(context, warehouse, anomalies.detect_usage_without_subscription)


@dg.asset_check(
    asset=BILLABLE_USAGE,
    blocking=False,
    partitions_def=daily_partitions,
    pool=WAREHOUSE_POOL,
    description=(
        "Warns when a touched date's total rated amount (per currency, exact) moved by more "
        "than max_revenue_change_share from the day before."
    ),
)
def revenue_change_anomalies(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    return _warn_on_findings(context, warehouse, anomalies.detect_revenue_changes)

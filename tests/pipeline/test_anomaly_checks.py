"""Anomaly checks in the real daily job: they warn, they never stop billing, and what they
found is kept once in ``quality.anomaly_findings`` however often the day runs."""

from __future__ import annotations

import csv
import gzip
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb

from ledger import Ledger
from orchestration.definitions import build_definitions
from orchestration.partitions import daily_partitions
from orchestration.runner import prepare_instance
from orchestration.settings import get_settings
from orchestration.summary import collect_summary
from tests.conftest import PipelineEnvironment
from tests.hand_fixture import _event

DAY_1 = date(2026, 10, 1)
ZED = "cus_zed000000000003"  # a Stripe customer without a subscription
# The hand fixture's day 1 bills 7 customer-meter-day slots; Zed's usage adds none.
DAY_1_ARRIVAL_SLOTS = 7
FEE_LINES = 1  # alpha's October fee on the Pro plan
ANOMALY_CHECKS = {
    "usage_volume_anomalies",
    "ingest_share_anomalies",
    "usage_without_subscription",
    "revenue_change_anomalies",
}


def _add_customer_without_subscription(data_dir: Path) -> None:
    """Zed is in the Stripe customer export (so ingestion accepts the events) but has no
    subscription; two calls of theirs arrive on day 1."""
    with open(data_dir / "raw" / "stripe" / "customers.csv", "a", newline="") as handle:
        csv.writer(handle).writerow([ZED, "zed@example.com", "Zed", "usd", "1756684800", "{}"])
    folder = data_dir / "raw" / "usage" / "date=2026-10-01" / "hour=12"
    folder.mkdir(parents=True)
    lines = [
        _event(
            f"evt_zed_{n}",
            ZED,
            "nimbus-large",
            f"2026-10-01T12:0{n}:00.000Z",
            f"2026-10-01T12:0{n}:01.000Z",
            (1_000, 100, 0),
        )
        for n in range(2)
    ]
    with gzip.open(folder / "part-0000.ndjson.gz", "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def _run_day_1() -> dg.ExecuteInProcessResult:
    """The whole daily job for day 1, through the code location's definitions."""
    settings = get_settings()
    job = dg.define_asset_job(
        "anomaly_test", selection=dg.AssetSelection.all(), partitions_def=daily_partitions
    )
    definitions = dg.Definitions.merge(build_definitions(settings), dg.Definitions(jobs=[job]))
    return definitions.resolve_job_def("anomaly_test").execute_in_process(
        partition_key=DAY_1.isoformat(), instance=prepare_instance(settings), raise_on_error=False
    )


def _anomaly_evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    evaluations = result.get_asset_check_evaluations()
    return {e.check_name: e for e in evaluations if e.check_name in ANOMALY_CHECKS}


def _recorded_findings() -> list[tuple[object, ...]]:
    with duckdb.connect(str(get_settings().warehouse_path), read_only=True) as conn:
        return conn.execute(
            "select kind, finding_day, customer_id, meter_id, message "
            "from quality.anomaly_findings order by kind, finding_day, message"
        ).fetchall()


def test_usage_without_subscription_warns_without_blocking_and_is_recorded_once(
    pipeline_env: PipelineEnvironment, stripe_server: str
) -> None:
    _add_customer_without_subscription(pipeline_env.data_dir)

    first = _run_day_1()

    assert first.success  # warnings do not block: the day is billed
    evaluations = _anomaly_evaluations(first)
    assert {name: e.passed for name, e in evaluations.items()} == {
        "usage_volume_anomalies": True,  # no history yet
        "ingest_share_anomalies": False,  # the fixture's retry and bad lines: 1 and 2 of 7
        "usage_without_subscription": False,
        "revenue_change_anomalies": True,  # no revenue the day before: nothing to compare
    }
    warning = evaluations["usage_without_subscription"]
    assert warning.severity == dg.AssetCheckSeverity.WARN
    assert warning.metadata["findings"].value == 1
    assert ZED in warning.metadata["findings_table"].value  # type: ignore[operator]
    with Ledger.connect(pipeline_env.ledger_url) as book:
        # Zed's usage is not billed, and Zed (no subscription) has no fee.
        assert book.verify().transactions == DAY_1_ARRIVAL_SLOTS + FEE_LINES
    # The summary's usage per charge model counts priced usage only: Zed's has no charge.
    figures = collect_summary(str(get_settings().warehouse_path), pipeline_env.ledger_url)
    assert {(m.charge_model, m.customers) for m in figures.charge_models} == {("per_unit", 2)}

    expected_subscription_finding = (
        "usage_without_subscription",
        DAY_1,
        ZED,
        None,
        f"{ZED} used 2,000 input tokens, 200 output tokens and 2 requests on nimbus-large on "
        "2026-10-01 but had no subscription in force that day; this usage is not billed.",
    )
    findings = _recorded_findings()
    assert [row for row in findings if row[0] == "usage_without_subscription"] == [
        expected_subscription_finding
    ]
    assert [row[0] for row in findings].count("ingest_share") == 2

    second = _run_day_1()

    assert second.success
    assert not _anomaly_evaluations(second)["usage_without_subscription"].passed
    assert _recorded_findings() == findings  # replaced, never duplicated

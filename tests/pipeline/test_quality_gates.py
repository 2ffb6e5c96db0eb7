"""Deliberately broken inputs stop at their gate: nothing downstream of the gate materialises,
nothing reaches the ledger or the (local) Stripe, and a clean re-run after the fix succeeds.

Each case runs the real daily job (or the part of it after the broken table) through Dagster on
the hand fixture; the breakage is made in the data, never in the code.
"""

from __future__ import annotations

import gzip
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb

from ledger import Ledger
from orchestration.assets.billing import (
    ledger_usage_accruals,
    ledger_usage_batch,
)
from orchestration.assets.ingestion import stripe_exports, usage_events
from orchestration.definitions import build_definitions
from orchestration.partitions import daily_partitions
from orchestration.runner import prepare_instance
from orchestration.settings import get_settings
from tests.conftest import PipelineEnvironment
from tests.hand_fixture import ALPHA, _event
from tests.pipeline.conftest import local_meter_events

DAY_1 = date(2026, 10, 1)
# Customer, meter and usage-date slots with an amount once arrival day 1 is billed (the late
# event of 1 Oct arrives on day 2): one ledger transaction and one meter event each.
DAY_1_ARRIVAL_SLOTS = 7
# Alpha's October fee on the Pro plan, posted with the first day billed (no meter event).
FEE_LINES = 1

INGESTION = dg.AssetSelection.assets(stripe_exports, usage_events)
EVERYTHING = dg.AssetSelection.all()
AFTER_INGESTION = EVERYTHING - INGESTION
POSTING = dg.AssetSelection.assets(ledger_usage_accruals).downstream()


def _run(selection: dg.AssetSelection, day: date = DAY_1) -> dg.ExecuteInProcessResult:
    """Run ``selection`` of the daily definitions for one partition, as the schedule would."""
    settings = get_settings()
    job = dg.define_asset_job("gate_test", selection=selection, partitions_def=daily_partitions)
    definitions = dg.Definitions.merge(build_definitions(settings), dg.Definitions(jobs=[job]))
    return definitions.resolve_job_def("gate_test").execute_in_process(
        partition_key=day.isoformat(), instance=prepare_instance(settings), raise_on_error=False
    )


def _check(result: dg.ExecuteInProcessResult, name: str) -> dg.AssetCheckEvaluation:
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert name in evaluations, sorted(evaluations)
    return evaluations[name]


def _failed_gates(result: dg.ExecuteInProcessResult, asset: str) -> set[str]:
    """The checks on ``asset`` that failed in the run (dbt tests and GX suites alike)."""
    return {
        e.check_name
        for e in result.get_asset_check_evaluations()
        if e.asset_key.to_user_string() == asset and not e.passed
    }


def _materialised(result: dg.ExecuteInProcessResult) -> set[str]:
    return {
        event.asset_key.to_user_string()
        for event in result.get_asset_materialization_events()
        if event.asset_key is not None
    }


def _assert_nothing_billed(pipeline_env: PipelineEnvironment, stripe_url: str) -> None:
    with Ledger.connect(pipeline_env.ledger_url) as book:
        assert book.verify().transactions == 0
    assert local_meter_events(stripe_url) == []


def _assert_day_1_billed(pipeline_env: PipelineEnvironment, stripe_url: str) -> None:
    with Ledger.connect(pipeline_env.ledger_url) as book:
        report = book.verify()
    assert report.ok and report.transactions == DAY_1_ARRIVAL_SLOTS + FEE_LINES
    assert len(local_meter_events(stripe_url)) == DAY_1_ARRIVAL_SLOTS


def _warehouse() -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(get_settings().warehouse_path))


def _write_day_1_file(data_dir: Path, name: str, lines: list[str]) -> None:
    folder = data_dir / "raw" / "usage" / "date=2026-10-01" / "hour=11"
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / name, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def _alpha_events(count: int) -> list[str]:
    return [
        _event(
            f"evt_schema_{n:04d}",
            ALPHA,
            "nimbus-large",
            "2026-10-01T11:00:00.000Z",
            "2026-10-01T11:00:01.000Z",
            (1_000, 100, 0),
        )
        for n in range(count)
    ]


def test_a_producer_schema_change_blocks_the_day_until_the_files_are_fixed(
    pipeline_env: PipelineEnvironment, stripe_server: str
) -> None:
    """The producer renamed ``input_tokens``: every new line is quarantined with its reason,
    and since most of the day fails the schema, billing the rest would under-bill: blocked."""
    renamed = [line.replace('"input_tokens"', '"prompt_tokens"') for line in _alpha_events(150)]
    _write_day_1_file(pipeline_env.data_dir, "part-0001.ndjson.gz", renamed)

    result = _run(EVERYTHING)
    assert not result.success
    gate = _check(result, "usage_files_suite")
    assert gate.passed is False
    (failing_day,) = gate.metadata["sample_failing_rows"].value  # type: ignore[attr-defined]
    assert failing_day["arrival_date"] == "2026-10-01"
    assert failing_day["schema_error_lines"] == "151"  # and the fixture's one invalid line
    assert failing_day["most_common_schema_error"] == "missing_input_tokens"
    assert {"ledger_usage_batch", "ledger_usage_accruals", "stripe_meter_events"}.isdisjoint(
        _materialised(result)
    )
    _assert_nothing_billed(pipeline_env, stripe_server)
    with _warehouse() as conn:
        reasons = conn.execute(
            "select reason, count(*) from ingest.quarantined_usage_lines "
            "where source_file like '%part-0001%' group by 1"
        ).fetchall()
    assert reasons == [("missing_input_tokens", 150)]  # nothing lost: each line with its reason

    _write_day_1_file(pipeline_env.data_dir, "part-0001.ndjson.gz", _alpha_events(150))
    fixed = _run(EVERYTHING)
    assert fixed.success
    assert _check(fixed, "usage_files_suite").passed
    _assert_day_1_billed(pipeline_env, stripe_server)


def test_negative_tokens_in_staged_usage_stop_billing(
    pipeline_env: PipelineEnvironment, stripe_server: str
) -> None:
    """Ingestion quarantines negative counts; should one reach the warehouse anyway (a bad
    backfill, a hand-edit), the staging gate stops the day before it is rated into money."""
    assert _run(INGESTION).success
    with _warehouse() as conn:
        conn.execute(
            "update ingest.usage_event_lines set output_tokens = -30000 "
            "where event_id = 'evt_a1' and status = 'accepted'"
        )

    result = _run(AFTER_INGESTION)
    assert not result.success
    # dbt's range test on the staging model fires first and stops the dbt step, so the GX
    # suite on the same model (tested on its own in tests/test_quality_suites.py) never runs.
    assert _failed_gates(result, "stg_usage__events") == {
        "accepted_range_stg_usage__events_output_tokens__0"
    }
    assert {"ledger_usage_batch", "ledger_usage_accruals", "stripe_meter_events"}.isdisjoint(
        _materialised(result)
    )
    _assert_nothing_billed(pipeline_env, stripe_server)

    assert _run(EVERYTHING).success  # re-ingesting the day restores what the files say
    _assert_day_1_billed(pipeline_env, stripe_server)


def test_a_day_staged_twice_is_not_rated_twice(
    pipeline_env: PipelineEnvironment, stripe_server: str
) -> None:
    """The day's accepted events loaded a second time (a restore replayed on top): every event
    id now appears twice, the staging gate fails, and the ledger and Stripe keep the first run."""
    assert _run(EVERYTHING).success
    with Ledger.connect(pipeline_env.ledger_url) as book:
        before = book.verify().content_hash
    sent_before = local_meter_events(stripe_server)
    with _warehouse() as conn:
        conn.execute(
            "insert into ingest.usage_event_lines "
            "select * replace (source_file || '.restored' as source_file) "
            "from ingest.usage_event_lines where arrival_date = ? and status = 'accepted'",
            [DAY_1],
        )

    result = _run(AFTER_INGESTION)
    assert not result.success
    assert _failed_gates(result, "stg_usage__events") == {"unique_stg_usage__events_event_id"}
    assert {"ledger_usage_batch", "ledger_usage_accruals", "stripe_meter_events"}.isdisjoint(
        _materialised(result)
    )
    with Ledger.connect(pipeline_env.ledger_url) as book:
        assert book.verify().content_hash == before
    assert local_meter_events(stripe_server) == sent_before

    assert _run(EVERYTHING).success
    with Ledger.connect(pipeline_env.ledger_url) as book:
        assert book.verify().content_hash == before
    assert local_meter_events(stripe_server) == sent_before


def test_an_unbalanced_ledger_batch_is_not_posted(
    pipeline_env: PipelineEnvironment, stripe_server: str
) -> None:
    """A staged batch whose entries do not sum to zero fails its gate, which names the
    transaction; the posting and Stripe do not run. Planning again repairs it."""
    assert _run(EVERYTHING - POSTING).success
    with _warehouse() as conn:
        key = conn.execute(
            "select min(transaction_key) from billing.ledger_batch_entries"
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "update billing.ledger_batch_entries set amount_minor = amount_minor + 0.01 "
            "where transaction_key = ? and entry_index = 0",
            [key],
        )

    result = _run(POSTING | dg.AssetSelection.checks_for_assets(ledger_usage_batch))
    assert not result.success
    gate = _check(result, "ledger_batch_suite")
    assert gate.passed is False
    assert gate.metadata["sample_failing_rows"].value == [  # type: ignore[attr-defined]
        {"transaction_key": key, "currency": "usd", "imbalance_minor": "0.010000000000"}
    ]
    assert {"ledger_usage_accruals", "stripe_meter_events"}.isdisjoint(_materialised(result))
    _assert_nothing_billed(pipeline_env, stripe_server)

    assert _run(EVERYTHING).success
    _assert_day_1_billed(pipeline_env, stripe_server)

"""The code location loads, as `dagster dev` and the UI will load it."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg

from orchestration.settings import PROJECT_ROOT


def test_definitions_load_with_every_asset_check_and_schedule() -> None:
    from orchestration.definitions import defs

    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {
        "stripe_customers",
        "accepted_usage_events",
        "usage_file_counts",
        "stg_usage__events",
        "billable_usage_daily",
        "invoice_lines",
        "ledger_usage_batch",
        "ledger_usage_accruals",
        "stripe_meter_events",
    } <= keys
    assert {
        "ledger_replica_entries",
        "stripe_outbox_slots",
        "customer_balances",
        "billing_conservation_daily",
        "metering_lag_daily",
        "metering_lag_by_day",
    } <= keys
    # The API's snapshot is published last: after the finance marts and Stripe's read-back.
    snapshot_parents = {
        key.to_user_string() for key in graph.get(dg.AssetKey("api_snapshot")).parent_keys
    }
    assert {"customer_balances", "stripe_meter_usage", "invoice_lines"} <= snapshot_parents
    assert [s.name for s in defs.schedules or []] == [
        "daily_billing_schedule",
        "stripe_reconciliation_schedule",
    ]
    # Billing never waits on reading Stripe's counts back; reconciliation does nothing else.
    billing = defs.resolve_job_def("daily_billing").asset_layer.executable_asset_keys
    reconciliation = defs.resolve_job_def("stripe_reconciliation").asset_layer.executable_asset_keys
    reconciling = {"stripe_meter_usage", "usage_reconciliation_daily", "invoice_accuracy"}
    assert reconciling <= {key.to_user_string() for key in reconciliation}
    assert not reconciling & {key.to_user_string() for key in billing}
    assert {"stripe_meter_events", "ledger_usage_accruals", "customer_balances"} <= {
        key.to_user_string() for key in billing
    }
    assert billing | reconciliation == set(graph.get_all_asset_keys())
    assert [s.name for s in defs.sensors or []] == ["freshness_checks_sensor"]
    check_names = {
        (check.asset_key.to_user_string(), check.name) for check in graph.asset_check_keys
    }
    for asset in ("accepted_usage_events", "ledger_usage_accruals", "stripe_meter_events"):
        assert (asset, "freshness_check") in check_names, sorted(check_names)[:20]
    assert ("stripe_meter_events", "stripe_outbox_clear") in check_names
    gates = {
        ("accepted_usage_events", "accepted_usage_events_suite"),
        ("usage_file_counts", "usage_files_suite"),
        ("stg_usage__events", "staging_usage_events_suite"),
        ("invoice_lines", "invoice_lines_suite"),
        ("ledger_usage_batch", "ledger_batch_suite"),
    }
    assert gates <= check_names
    for asset, name in gates:
        spec = graph.get_check_spec(dg.AssetCheckKey(dg.AssetKey(asset), name))
        assert spec.blocking, f"{asset}.{name} must block what is downstream of it"


def test_dagster_definitions_validate_passes() -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "definitions",
            "validate",
            "-m",
            "orchestration.definitions",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_loading_the_code_location_does_not_import_great_expectations() -> None:
    """Nor the billing API's web framework: `dagster dev` loads this on every start."""
    code = (
        "import sys, orchestration.definitions; "
        "print(any(m in sys.modules for m in ('great_expectations', 'fastapi')))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert completed.stdout.strip().splitlines()[-1] == "False"

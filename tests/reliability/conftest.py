"""The reliability harness's shared clean run.

A Dagster run costs most of a minute here (two dbt invocations), so the re-run, crash and Stripe
fault tests share one clean pipeline (``reruns.run_baseline``: every day once, as one backfill)
instead of each billing the same days again for its expectation.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability import reruns

# Variables a test environment must not inherit (as tests/conftest.py's pipeline_env clears).
CLEARED_VARIABLES = ("METERBOOK_WAREHOUSE_PATH", "METERBOOK_RAW_DIR", "STRIPE_API_KEY")


@pytest.fixture(scope="session")
def clean_baseline(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str
) -> Iterator[reruns.Baseline]:
    """The re-runs scale's days billed once in a clean pipeline; the environment is restored
    afterwards, its ledger database dropped at the end of the session."""
    scale = reruns.SCALES[reruns.rerun_scale()]
    ledger_url = reruns.new_database(postgres_url, "clean")
    with pytest.MonkeyPatch.context() as patch:
        for variable in CLEARED_VARIABLES:
            patch.delenv(variable, raising=False)
        baseline = reruns.run_baseline(
            tmp_path_factory.mktemp("clean") / "data", ledger_url, scale, patch.setenv
        )
    try:
        yield baseline
    finally:
        reruns.drop_database(postgres_url, ledger_url)

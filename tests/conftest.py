"""Shared fixtures: one embedded PostgreSQL per test session, a database per test, and the
pipeline's environment pointed at a temporary data directory and a local Stripe on 127.0.0.1."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from ledger.embedded import embedded_ledger_url

# The local Stripe's clock for the hand fixture (data of 1-2 October 2026), as Stripe's test
# clocks would pin it: meter event timestamps must lie within its past 35 days.
FIXTURE_STRIPE_NOW = "2026-10-05T00:00:00Z"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A real PostgreSQL server for the whole session, in a short /tmp path (socket limit)."""
    return embedded_ledger_url(Path(tempfile.mkdtemp(prefix="mbpg")))


@pytest.fixture
def new_database(postgres_url: str) -> Iterator[Callable[[], str]]:
    """Create empty databases on demand; each is dropped when the test ends."""
    names: list[str] = []

    def create() -> str:
        name = f"ledger_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'create database "{name}"')
        names.append(name)
        return postgres_url.replace("/postgres?", f"/{name}?", 1)

    yield create
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for name in names:
            conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def ledger_url(postgres_url: str) -> str:
    """A fresh, empty database on the session's server."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    return postgres_url.replace("/postgres?", f"/{name}?", 1)


@dataclass(frozen=True)
class PipelineEnvironment:
    data_dir: Path
    ledger_url: str
    stripe_url: str


@pytest.fixture
def pipeline_env(
    tmp_path: Path, ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PipelineEnvironment]:
    """Environment for a pipeline run; the caller writes raw data, then starts ``local_stripe``."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(data_dir))
    monkeypatch.setenv("METERBOOK_LEDGER_URL", ledger_url)
    monkeypatch.delenv("METERBOOK_WAREHOUSE_PATH", raising=False)
    monkeypatch.delenv("METERBOOK_RAW_DIR", raising=False)
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)
    yield PipelineEnvironment(data_dir=data_dir, ledger_url=ledger_url, stripe_url="")


# The suite runs on parallel workers (pytest-xdist, `--dist loadgroup`). Tests that share an
# expensive module- or session-scoped fixture stay on one worker, which builds it once.
SHARED_FIXTURE_GROUPS = {
    "tests/rating/test_dbt_rating.py": "dbt_rated",
    "tests/rating/test_pricing_doc.py": "dbt_rated",
    "tests/rating/test_invoice_properties.py": "dbt_rated",
    "tests/rating/test_fee_lines.py": "fee_lines",
    "tests/reliability/test_reruns.py": "clean_baseline",
    "tests/reliability/test_stripe_fault_rates.py": "clean_baseline",
    "tests/reliability/test_bad_input.py": "bad_input_run",
    "tests/reliability/test_webhook_storm.py": "webhook_storm",
    "tests/reliability/test_crashes.py": "webhook_crashes",
    "tests/reporting/test_finance_report.py": "finance_report",
    "tests/ledger/test_processes.py": "ledger_processes",
    "tests/test_sample_data.py": "sample_data",
    "tests/test_xdist_groups.py": "xdist_groups",
}
# Files whose tests bill days through the whole pipeline (most of a minute each, or more): they
# start first, so the workers share them out instead of one of them ending the session alone.
LONG_RUNNING = (
    "tests/pipeline/",
    "tests/reliability/",
    "tests/reporting/",
    "tests/rating/",
    "tests/api/test_warehouse_views.py",
)


# First, so the marks exist when pytest-xdist's own hook reads them (it tags each node id with
# its group); tests/test_xdist_groups.py checks that the grouping takes effect.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        group = SHARED_FIXTURE_GROUPS.get(item.nodeid.split("::")[0])
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: not item.nodeid.startswith(LONG_RUNNING))

"""Reliability: the pipeline and the webhook receiver killed with SIGKILL, then run again.

The reduced form CI runs (``tests/reliability/crashes.py`` has the points and the machinery;
``bench/reliability_crashes.py`` runs every point against a clean run and writes the table in
docs/reliability.md):

- the pipeline (2 arrival days, 3 customers, 150 events a day, one Dagster run per process)
  killed right after Stripe accepted a meter event batch and before the outbox recorded it
  (ledger posted, usage half sent: the sharpest exactly-once point), then run again: the end
  state must be what a clean run leaves, derived from the rated slots and the sample data's
  manifest (``crashes.derived_state``; the full form checks that derivation against a clean
  run), which saves a third pipeline run. A pipeline run costs 1-2 minutes here, so CI tries
  one pipeline point; the full form tries every one;
- the webhook receiver killed in the middle of processing an event (ledger transactions posted,
  dunning steps not recorded, no answer), Stripe redelivering what got no answer: the end state
  must be an uninterrupted in-order delivery's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.reliability import crashes

pytestmark = pytest.mark.reliability

REDUCED_PIPELINE_POINTS = ("stripe.after_request_before_outbox_update",)
REDUCED_WEBHOOK_POINTS = ("webhooks.mid_process:8",)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> crashes.Workspace:
    root = Path(tmp_path_factory.mktemp("crashes"))
    return crashes.make_workspace(root, postgres_url, crashes.SCALES["reduced"])


def test_a_run_killed_after_stripe_accepted_usage_then_rerun_ends_as_a_clean_run(
    workspace: crashes.Workspace,
) -> None:
    points = [crashes.point(at) for at in REDUCED_PIPELINE_POINTS]
    outcomes = crashes.crash_chain(workspace, points, clean=None, name="reduced")
    assert [crashes.describe(o) for o in outcomes if not o.passed] == []


@pytest.fixture(scope="module")
def storm() -> Any:
    from tests.reliability import webhook_storm as storm_kit

    return storm_kit.generate_storm(
        events=crashes.SCALES["reduced"].webhook_events, seed=crashes.SEED
    )


@pytest.fixture(scope="module")
def webhook_clean(storm: Any, postgres_url: str) -> Iterator[dict[str, Any]]:
    name = f"crash_clean_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    try:
        yield crashes.webhook_clean_state(storm, postgres_url.replace("/postgres?", f"/{name}?", 1))
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.mark.parametrize("at", REDUCED_WEBHOOK_POINTS)
def test_the_receiver_killed_then_redelivered_to_ends_as_an_uninterrupted_delivery(
    at: str, storm: Any, webhook_clean: dict[str, Any], new_database: Any
) -> None:
    outcome = crashes.webhook_crash_and_redeliver(
        storm, new_database(), crashes.point(at), webhook_clean
    )
    assert outcome.problems == []

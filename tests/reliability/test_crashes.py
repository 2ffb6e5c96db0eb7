"""Reliability: the webhook receiver killed with SIGKILL, then redelivered to.

The reduced form CI runs (``tests/reliability/crashes.py`` has the points and the machinery;
``bench/reliability_crashes.py`` runs every point, pipeline and receiver, against a clean run and
writes the table in docs/reliability.md): the receiver killed in the middle of processing an
event (ledger transactions posted, dunning steps not recorded, no answer), Stripe redelivering
what got no answer: the end state must be an uninterrupted in-order delivery's.

The pipeline's reduced crash runs inside ``test_reruns.py``, against the clean run the harness
shares: the earlier days' run killed right after Stripe accepted a meter event batch and before
the outbox recorded it (ledger posted, usage half sent: the sharpest exactly-once point), then
every day run again. A pipeline run costs most of a minute here, so CI tries that one point; the
full form tries every one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.reliability import crashes

pytestmark = pytest.mark.reliability

REDUCED_WEBHOOK_POINTS = ("webhooks.mid_process:8",)


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

"""Fixtures and helpers shared by the pipeline tests: the hand fixture served by a local Stripe."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest

from stripe_local.server import LocalStripeServer
from tests.conftest import FIXTURE_STRIPE_NOW, PipelineEnvironment
from tests.hand_fixture import write_hand_fixture


@pytest.fixture
def stripe_server(
    pipeline_env: PipelineEnvironment, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The hand fixture's raw files, and a local Stripe seeded with its customers."""
    write_hand_fixture(pipeline_env.data_dir)
    with LocalStripeServer(
        db_path=pipeline_env.data_dir / "stripe_local.sqlite3",
        now=FIXTURE_STRIPE_NOW,
        seed_customers_csv=pipeline_env.data_dir / "raw" / "stripe" / "customers.csv",
    ) as server:
        monkeypatch.setenv("METERBOOK_STRIPE_API_BASE", server.url)
        yield server.url


def local_meter_events(stripe_url: str) -> list[dict[str, object]]:
    """Every meter event the local Stripe accepted."""
    with urllib.request.urlopen(f"{stripe_url}/_local/meter_events") as response:
        return json.loads(response.read())

"""Each test gets its own local Stripe on 127.0.0.1, with a fixed clock and a fresh SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import stripe

from stripe_local.server import LocalStripeServer
from tests.stripe_local.helpers import NOW_ISO, client_for


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalStripeServer]:
    with LocalStripeServer(db_path=tmp_path / "stripe.sqlite3", now=NOW_ISO) as running:
        yield running


@pytest.fixture
def client(server: LocalStripeServer) -> stripe.StripeClient:
    return client_for(server)

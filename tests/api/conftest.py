"""The billing API under test: the real app on uvicorn, on 127.0.0.1 and a free port, over a
fresh database of the session's PostgreSQL; driven with httpx."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn

from api.app import create_app
from api.auth import Principal, Role, hash_token
from api.config import ApiConfig, price_book_currencies, price_book_meters

TOKENS = {
    "viewer": "mbk_test_viewer_0123456789abcdef",
    "support": "mbk_test_support_0123456789abcdef",
    "finance": "mbk_test_finance_0123456789abcdef",
    "finance2": "mbk_test_finance2_0123456789abcdef",
}
ROLES = {
    "viewer": Role.VIEWER,
    "support": Role.SUPPORT,
    "finance": Role.FINANCE,
    "finance2": Role.FINANCE,
}
# The customers of the Stripe export: two named ones and those the ledger's posting worker
# accrues usage for (c000, c001, ...).
CUSTOMERS = ["cus_alpha", "cus_beta", *[f"c{number:03d}" for number in range(10)]]
WEBHOOK_SECRET = "whsec_test_api"
STARTUP_SECONDS = 20


@dataclass
class ApiServer:
    url: str
    ledger_url: str
    config: ApiConfig

    def client(self, who: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {TOKENS[who]}"} if who else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def counts(self) -> dict[str, int]:
        """How many rows each kind of write has left: to prove a refusal wrote nothing."""
        with psycopg.connect(self.ledger_url) as conn:
            row = conn.execute(
                "select (select count(*) from ledger.transactions), "
                "(select count(*) from ledger.entries), "
                "(select count(*) from api.idempotency_keys), "
                "(select count(*) from api.credit_grants), "
                "(select count(*) from api.audit_log)"
            ).fetchone()
        assert row is not None
        names = ("transactions", "entries", "idempotency_keys", "credit_grants", "audit_log")
        return dict(zip(names, (int(value) for value in row), strict=True))


def write_customers(path: Path, customers: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"{c},billing@{c}.example.com,{c},usd,1759276800,{{}}" for c in customers]
    path.write_text("id,email,name,currency,created,metadata\n" + "\n".join(rows) + "\n")
    return path


def api_config(ledger_url: str, customers_csv: Path, **overrides: Any) -> ApiConfig:
    config = ApiConfig(
        ledger_url=ledger_url,
        principals={
            hash_token(token): Principal(name=who, role=ROLES[who]) for who, token in TOKENS.items()
        },
        customers_csv=customers_csv,
        currencies=price_book_currencies(),
        meters=price_book_meters(),
        approval_threshold_minor=Decimal(5_000),
        stripe_webhook_secret=WEBHOOK_SECRET,
    )
    return replace(config, **overrides)


class RunningServer:
    """uvicorn in a thread of the test process, on a socket bound to 127.0.0.1:0."""

    def __init__(self, config: ApiConfig) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self._server = uvicorn.Server(
            uvicorn.Config(create_app(config), log_level="warning", lifespan="on")
        )
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def __enter__(self) -> RunningServer:
        self._thread.start()
        deadline = time.monotonic() + STARTUP_SECONDS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("The API server did not start (see the log above).")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()


@pytest.fixture
def start_api(ledger_url: str, tmp_path: Path) -> Iterator[Callable[..., ApiServer]]:
    """Start a server (config overrides as keyword arguments); stopped when the test ends."""
    running: list[RunningServer] = []
    customers_csv = write_customers(tmp_path / "raw" / "stripe" / "customers.csv", CUSTOMERS)

    def start(**overrides: Any) -> ApiServer:
        config = api_config(ledger_url, overrides.pop("customers_csv", customers_csv), **overrides)
        server = RunningServer(config).__enter__()
        running.append(server)
        return ApiServer(
            url=f"http://127.0.0.1:{server.port}", ledger_url=ledger_url, config=config
        )

    yield start
    for server in reversed(running):
        server.__exit__(None, None, None)


@pytest.fixture
def api(start_api: Callable[..., ApiServer]) -> ApiServer:
    return start_api()

"""The Stripe webhook receiver mounted at /stripe/webhooks (Stripe's signature, not a token,
authenticates it), and ``meterbook serve`` as a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg

from api.auth import Role, token_entry
from stripe_sync.webhooks import sign
from tests.api.conftest import CUSTOMERS, WEBHOOK_SECRET, ApiServer, write_customers

SERVE_STARTUP_SECONDS = 60


def subscription_event(padding: int = 0) -> bytes:
    event = {
        "id": "evt_api_1",
        "object": "event",
        "type": "customer.subscription.created",
        "created": 1_764_000_000,
        "data": {
            "object": {
                "id": "sub_api_1",
                "object": "subscription",
                "customer": "cus_alpha",
                "status": "active",
                "metadata": {"plan_id": "pro", "padding": "x" * padding},
                "items": {"object": "list", "data": []},
            }
        },
    }
    return json.dumps(event).encode()


def test_signed_stripe_events_are_received_at_stripe_webhooks(api: ApiServer) -> None:
    payload = subscription_event(padding=40_000)  # larger than the API's own body limit
    assert len(payload) > api.config.max_body_bytes
    with api.client() as client:
        forged = client.post(
            "/stripe/webhooks",
            content=payload,
            headers={"Stripe-Signature": sign(payload, "whsec_other", int(time.time()))},
        )
        assert forged.status_code == 400
        received = client.post(
            "/stripe/webhooks",
            content=payload,
            headers={"Stripe-Signature": sign(payload, WEBHOOK_SECRET, int(time.time()))},
        )
    assert received.status_code == 200, received.text
    assert received.json()["received"] == "evt_api_1"
    with psycopg.connect(api.ledger_url) as conn:
        status = conn.execute(
            "select status, plan_id from stripe_sync.subscriptions where subscription_id = %s",
            ["sub_api_1"],
        ).fetchone()
    assert status == ("active", "pro")


def test_meterbook_serve_listens_on_127_0_0_1_and_answers(ledger_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    write_customers(data_dir / "raw" / "stripe" / "customers.csv", CUSTOMERS)
    token = "mbk_serve_test_viewer_token_0123456789"
    env = os.environ | {
        "METERBOOK_DATA_DIR": str(data_dir),
        "METERBOOK_LEDGER_URL": ledger_url,
        "METERBOOK_API_TOKENS": token_entry("viewer", Role.VIEWER, token),
    }
    command = [sys.executable, "-c", "from orchestration.cli import app; app()", "serve"]
    process = subprocess.Popen(
        [*command, "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        started = time.monotonic()
        first_line = process.stdout.readline()
        assert first_line.startswith("Meterbook API on http://127.0.0.1:"), first_line
        url = first_line.split()[3]
        while True:
            try:
                response = httpx.get(
                    f"{url}/customers/cus_alpha/ledger",
                    headers={"Authorization": f"Bearer {token}"},
                )
                break
            except httpx.ConnectError:
                assert time.monotonic() - started < SERVE_STARTUP_SECONDS
                time.sleep(0.1)
        assert response.status_code == 200, response.text
        assert response.json()["transactions"] == []
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert token not in output


def test_meterbook_serve_refuses_to_start_without_tokens(ledger_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "METERBOOK_API_TOKENS"} | {
        "METERBOOK_DATA_DIR": str(tmp_path),
        "METERBOOK_LEDGER_URL": ledger_url,
    }
    result = subprocess.run(
        [sys.executable, "-c", "from orchestration.cli import app; app()", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "METERBOOK_API_TOKENS" in result.stderr


def test_the_demo_serves_the_api_with_new_printed_tokens(ledger_url: str, tmp_path: Path) -> None:
    """``meterbook demo --serve-api``'s last step: a viewer and a support token, made for this
    session and printed once, that the served API accepts with their roles."""
    data_dir = tmp_path / "data"
    write_customers(data_dir / "raw" / "stripe" / "customers.csv", CUSTOMERS)
    env = {k: v for k, v in os.environ.items() if k != "METERBOOK_API_TOKENS"} | {
        "METERBOOK_DATA_DIR": str(data_dir),
        "METERBOOK_LEDGER_URL": ledger_url,
    }
    code = "from orchestration.cli import _serve_demo_api; _serve_demo_api(0)"
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        while not lines or not lines[-1].startswith("Meterbook API on http://127.0.0.1:"):
            line = process.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        printed = "".join(lines)
        viewer = printed.split("viewer ", 1)[1].split()[0]
        support = printed.split("support ", 1)[1].split()[0]
        url = lines[-1].split()[3]
        started = time.monotonic()
        while True:
            try:
                read = httpx.get(
                    f"{url}/customers/cus_alpha", headers={"Authorization": f"Bearer {viewer}"}
                )
                break
            except httpx.ConnectError:
                assert time.monotonic() - started < SERVE_STARTUP_SECONDS
                time.sleep(0.1)
        assert read.status_code == 200, read.text
        body = {"amount_minor": "100", "currency": "usd", "reason": "demo"}
        refused = httpx.post(
            f"{url}/customers/cus_alpha/credits",
            json=body,
            headers={"Authorization": f"Bearer {viewer}", "Idempotency-Key": "demo-1"},
        )
        granted = httpx.post(
            f"{url}/customers/cus_alpha/credits",
            json=body,
            headers={"Authorization": f"Bearer {support}", "Idempotency-Key": "demo-1"},
        )
        assert (refused.status_code, granted.status_code) == (403, 201), granted.text
        assert granted.json()["requested_by"] == "demo-support"
    finally:
        process.terminate()
        process.communicate(timeout=30)

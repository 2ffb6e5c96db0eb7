"""The support commands (``meterbook customer|credits|adjust|anomalies``) run the API's
operations with the same roles, limits, Idempotency-Keys and audit as HTTP, on a real ledger."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from api.auth import token_entry
from orchestration.cli import app
from tests.api.conftest import CUSTOMERS, ROLES, TOKENS, write_customers

runner = CliRunner()


@pytest.fixture
def cli_env(tmp_path: Path, ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    data_dir = tmp_path / "data"
    write_customers(data_dir / "raw" / "stripe" / "customers.csv", CUSTOMERS)
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(data_dir))
    monkeypatch.setenv("METERBOOK_LEDGER_URL", ledger_url)
    monkeypatch.setenv(
        "METERBOOK_API_TOKENS",
        ",".join(token_entry(who, ROLES[who], token) for who, token in TOKENS.items()),
    )
    monkeypatch.delenv("METERBOOK_API_TOKEN", raising=False)
    return ledger_url


def meterbook(who: str | None, *arguments: str) -> tuple[int, Any, str]:
    """Exit code, the JSON printed (or None) and what went to standard error."""
    env = {"METERBOOK_API_TOKEN": TOKENS[who]} if who else {}
    result = runner.invoke(app, list(arguments), env=env)
    try:
        body = json.loads(result.stdout)
    except ValueError:
        body = None
    return result.exit_code, body, result.stderr


def grant(who: str | None, amount: str, *extra: str) -> tuple[int, Any, str]:
    return meterbook(
        who,
        "credits",
        "grant",
        "cus_alpha",
        "--amount",
        amount,
        "--currency",
        "usd",
        "--reason",
        "outage on 2026-10-03",
        *extra,
    )


def audit_log(ledger_url: str) -> list[tuple[str, str]]:
    with psycopg.connect(ledger_url) as conn:
        if conn.execute("select to_regclass('api.audit_log')").fetchone() == (None,):
            return []  # nothing ever reached the database
        rows = conn.execute("select principal, action from api.audit_log order by 1, 2").fetchall()
    return [(str(actor), str(action)) for actor, action in rows]


def test_support_grants_replays_and_finance_approves_from_the_terminal(cli_env: str) -> None:
    code, body, err = grant("support", "500", "--idempotency-key", "tkt-101")
    assert (code, body["status"], body["requested_by"]) == (0, "approved", "support"), err
    # The same command again is a replay of the same grant; another amount under the key, a 409.
    assert grant("support", "500", "--idempotency-key", "tkt-101")[1] == body
    code, _, err = grant("support", "600", "--idempotency-key", "tkt-101")
    assert (
        code == 1 and json.loads(err.splitlines()[-1])["error"]["code"] == "idempotency_key_reused"
    )

    # Over the threshold: pending; the requester cannot approve, another finance user can.
    code, pending, err = grant("finance", "7500")
    assert (code, pending["status"]) == (0, "pending_approval"), err
    assert "Idempotency-Key: cli-" in err  # printed, to retry the same write
    approve = ("credits", "approve", "cus_alpha", pending["grant_id"])
    code, _, err = meterbook("finance", *approve)
    assert code == 1 and "second_approver_required" in err
    code, approved, err = meterbook("finance2", *approve)
    assert (code, approved["status"], approved["approved_by"]) == (0, "approved", "finance2")

    code, state, err = meterbook(None, "customer", "show", "cus_alpha")
    assert code == 0, err
    remaining = {c["grant_id"]: c["remaining_minor"] for c in state["ledger"]["credits"]}
    assert remaining == {"api-tkt-101": "500", pending["grant_id"]: "7500"}
    assert state["warehouse"]["available"] is False  # no snapshot published in this test

    code, page, err = meterbook(None, "customer", "ledger", "cus_alpha", "--limit", "1")
    assert code == 0 and len(page["transactions"]) == 1 and page["next_cursor"], err
    code, listed, _ = meterbook(None, "credits", "list", "cus_alpha")
    assert sorted(g["status"] for g in listed) == ["approved", "approved"]
    assert audit_log(cli_env) == [
        ("finance", "credit_grant_requested"),
        ("finance2", "credit_grant_approved"),
        ("support", "credit_granted"),
    ]


def test_writes_need_a_token_and_the_right_role(cli_env: str) -> None:
    code, _, err = grant(None, "500")
    assert code == 2 and "METERBOOK_API_TOKEN" in err
    code, _, err = grant("viewer", "500")
    assert code == 1 and json.loads(err.splitlines()[-1])["error"]["code"] == "forbidden"
    adjustment = (
        "adjust",
        "cus_beta",
        "--amount",
        "250",
        "--currency",
        "usd",
        "--direction",
        "lower_receivable",
        "--reason",
        "goodwill for ticket 88",
    )
    assert meterbook("support", *adjustment)[0] == 1
    code, _, err = grant("support", "-5")
    assert code == 1 and "more than zero" in err
    assert audit_log(cli_env) == []  # nothing refused was written

    code, posted, err = meterbook("finance", *adjustment)
    assert (code, posted["posted_by"], posted["amount_minor"]) == (0, "finance", "250"), err
    entries = {e["account"]: e["amount_minor"] for e in posted["entries"]}
    assert entries == {"customer:cus_beta:receivable": "-250", "platform:adjustments": "250"}
    code, _, err = meterbook(None, "anomalies")
    assert code == 1 and "snapshot_unavailable" in err

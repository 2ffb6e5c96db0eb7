"""``meterbook ledger verify`` and ``meterbook ledger balances`` against a real ledger."""

from __future__ import annotations

import psycopg
import pytest
from typer.testing import CliRunner

from ledger import Ledger
from orchestration.cli import app
from tests.ledger.helpers import transfer
from tests.ledger.test_lifecycle import grants


@pytest.fixture
def cli_ledger(book: Ledger, ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> Ledger:
    monkeypatch.setenv("METERBOOK_LEDGER_URL", ledger_url)
    return book


def test_balances_of_a_customer_as_of_a_business_time(cli_ledger: Ledger) -> None:
    cli_ledger.post_many(grants())  # effective 1 October 2026
    runner = CliRunner()
    now = runner.invoke(app, ["ledger", "balances", "--customer", "acme"])
    assert now.exit_code == 0, now.output
    assert "customer:acme:prepaid_credit" in now.output
    assert "-1000 usd" in now.output
    assert "platform:" not in now.output
    before = runner.invoke(app, ["ledger", "balances", "--as-of", "2026-09-30"])
    assert before.exit_code == 0, before.output
    assert "No entries" in before.output


def test_verify_exits_non_zero_on_a_violation(cli_ledger: Ledger, ledger_url: str) -> None:
    cli_ledger.post_many([transfer("t1", "a", "b", "1")])
    runner = CliRunner()
    healthy = runner.invoke(app, ["ledger", "verify", "--recompute"])
    assert healthy.exit_code == 0, healthy.output
    assert "invariants: all hold" in healthy.output
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        conn.execute("set session_replication_role = replica")  # what only a superuser can do
        conn.execute("update ledger.entries set amount_minor = 7 where account = 'a'")
    broken = runner.invoke(app, ["ledger", "verify"])
    assert broken.exit_code == 1
    assert "VIOLATED: unbalanced transactions: t1" in broken.output

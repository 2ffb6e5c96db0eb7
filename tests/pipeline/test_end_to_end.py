"""The whole pipeline through Dagster, on the hand-computed fixture: real DuckDB, dbt, GX,
PostgreSQL and stripe-python over HTTP to the local Stripe-compatible server."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import psycopg
import pytest

import orchestration.quality.usage_suite  # noqa: F401  (binds the suite's limits before a test patches ingestion's)
from api import store
from api.auth import Principal, Role
from api.models import CreditGrantRequest
from api.writes import RequestContext, grant_credit
from ledger import Entry, Ledger, Transaction
from ledger.migrations import migrate
from ledger.replication import replicate_ledger
from ledger.usage_accruals import unbilled_receivable_account
from orchestration import credit_tables
from orchestration.runner import prepare_instance, run_days
from orchestration.settings import get_settings
from orchestration.summary import CreditSummary, collect_summary
from pricing.credits import reference_spending_orders
from tests.api.conftest import api_config, write_customers
from tests.conftest import PipelineEnvironment
from tests.dbt_cli import run_dbt
from tests.hand_fixture import (
    BETA,
    EXPECTED_COUNTS,
    EXPECTED_DAILY_AMOUNTS,
    EXPECTED_FEES,
    EXPECTED_INVOICE_TOTALS,
    EXPECTED_LEDGER_TRANSACTIONS,
    EXPECTED_METER_EVENTS,
    EXPECTED_RECEIVABLE,
    EXPECTED_USAGE_REVENUE,
)
from tests.pipeline.conftest import local_meter_events

DAY_1 = date(2026, 10, 1)
DAY_2 = date(2026, 10, 2)

# Tables with a natural key, and the key: a re-run must never leave two rows for one key.
NATURAL_KEYS = {
    "ingest.usage_event_lines": "source_file, line_number",
    "ingest.invalid_usage_lines": "source_file, line_number",
    "ingest.usage_files": "source_file",
    "int_usage_daily": "customer_id, usage_date, event_type, model, request_kind, tool",
    "billable_usage_daily": "customer_id, meter_id, usage_date",
    "invoice_lines": "customer_id, billing_period_start_date, line_type, line_id",
    "invoice_credits": "customer_id, billing_period_start_date, meter_id, currency",
}


def _run(first: date, last: date, chunk_days: int = 1) -> None:
    outcomes = run_days(get_settings(), first, last, chunk_days=chunk_days)
    assert outcomes and all(o.success for o in outcomes), outcomes


def _dbt(*arguments: str) -> subprocess.CompletedProcess[str]:
    """dbt itself on this test's warehouse (not through Dagster)."""
    settings = get_settings()
    return run_dbt(
        *arguments, warehouse=settings.warehouse_path, work_dir=settings.data_dir / "test_dbt"
    )


def _ledger_state(ledger_url: str) -> tuple[int, str]:
    with Ledger.connect(ledger_url) as book:
        report = book.verify()
    assert not report.unbalanced_transactions
    return report.transactions, report.content_hash


def _duplicate_keys() -> dict[str, int]:
    duplicates = {}
    with duckdb.connect(str(get_settings().warehouse_path), read_only=True) as conn:
        for table, key in NATURAL_KEYS.items():
            row = conn.execute(
                f"select count(*) from (select {key} from {table} group by {key} "
                "having count(*) > 1)"
            ).fetchone()
            duplicates[table] = int(row[0]) if row else -1
    return duplicates


def test_hand_fixture_is_billed_to_the_exact_decimal(
    pipeline_env: PipelineEnvironment, stripe_server: str
) -> None:
    _run(DAY_1, DAY_2)

    with duckdb.connect(str(get_settings().warehouse_path), read_only=True) as conn:
        daily = {
            (c, m, d.isoformat()): amount
            for c, m, d, amount in conn.execute(
                "select customer_id, meter_id, usage_date, amount_minor_exact "
                "from billable_usage_daily"
            ).fetchall()
        }
        invoices = dict(
            conn.execute(
                "select customer_id, sum(amount_minor) from invoice_lines group by 1"
            ).fetchall()
        )
        counts = conn.execute(
            "select sum(raw_lines), sum(accepted_lines), sum(duplicate_lines), "
            "sum(quarantined_lines), sum(unaccounted_lines) from usage_conservation_daily"
        ).fetchone()
    assert daily == EXPECTED_DAILY_AMOUNTS
    assert invoices == EXPECTED_INVOICE_TOTALS
    assert counts == (
        EXPECTED_COUNTS["raw"],
        EXPECTED_COUNTS["accepted"],
        EXPECTED_COUNTS["duplicates"],
        EXPECTED_COUNTS["quarantined"],
        0,
    )

    with Ledger.connect(pipeline_env.ledger_url) as book:
        for customer, amount in EXPECTED_RECEIVABLE.items():
            assert book.balance(unbilled_receivable_account(customer), "usd") == amount
        assert book.balance("platform:usage_revenue", "usd") == -sum(
            EXPECTED_USAGE_REVENUE.values()
        )
        assert book.balance("platform:subscription_revenue", "usd") == -sum(EXPECTED_FEES.values())
        ledger_balances = book.balances()
    transactions, _ = _ledger_state(pipeline_env.ledger_url)
    assert transactions == EXPECTED_LEDGER_TRANSACTIONS
    with duckdb.connect(str(get_settings().warehouse_path), read_only=True) as conn:
        replica = conn.execute(
            "select account, currency, sum(amount_minor) from ledger.entries group by all"
        ).fetchall()
        (replicated,) = conn.execute("select count(*) from ledger.transactions").fetchone() or (0,)
        finance = dict(
            conn.execute(
                "select customer_id, unbilled_receivable_minor from customer_balances"
            ).fetchall()
        )
    assert {(a, c): Decimal(total) for a, c, total in replica} == ledger_balances
    assert replicated == EXPECTED_LEDGER_TRANSACTIONS
    assert finance == EXPECTED_RECEIVABLE  # the finance mart, from the replica, to the decimal
    with duckdb.connect(str(get_settings().warehouse_path), read_only=True) as conn:
        statuses = dict(
            conn.execute(
                "select status, count(*) from billing_conservation_daily group by 1"
            ).fetchall()
        )
    assert statuses == {"ok": len(EXPECTED_DAILY_AMOUNTS)}  # rated = accrued = metered
    with duckdb.connect(str(get_settings().warehouse_path), read_only=True) as conn:
        lag = conn.execute(
            "select sum(slots), sum(slots_sent), min(events), min(received_lag_max_seconds), "
            "bool_and(sent_lag_max_seconds >= 0) from metering_lag_daily"
        ).fetchone()
    assert lag is not None
    billed_slots = sum(1 for amount in EXPECTED_DAILY_AMOUNTS.values() if amount)
    assert lag[0] == lag[1] == billed_slots  # every slot with an amount billed and sent
    assert lag[2] > 0 and lag[3] >= 0 and lag[4]  # events measured; sent after billed
    lag_table = _latest_check_metadata("metering_lag_daily", "metering_lag_summary")["lag_table"]
    assert "| 2026-10-01 |" in lag_table.value and "| usage date |" in lag_table.value
    # Day 2's arrivals touched both usage dates: every accepted event, each counted once (not
    # once per meter that reads it).
    events_per_day = [
        int(row.split("|")[2].replace(",", ""))
        for row in lag_table.value.splitlines()
        if row.startswith("| 2026-")
    ]
    assert len(events_per_day) == 2
    assert sum(events_per_day) == EXPECTED_COUNTS["accepted"]
    with duckdb.connect(str(get_settings().warehouse_path), read_only=True) as conn:
        accuracy = conn.execute(
            "select invoices_compared, invoices_matching, matching_share, "
            "total_abs_difference_minor, revenue_at_risk_minor from invoice_accuracy"
        ).fetchall()
        discrepancies = conn.execute("select * from reconciliation_discrepancies").fetchall()
    assert accuracy == [(2, 2, Decimal(1), 0, 0)]  # both customers' October invoices, exact
    assert discrepancies == []
    assert _float_money_columns() == []
    # dbt's unit tests (left out of billing runs) pass against this warehouse's models.
    unit_tests = _dbt("test", "--select", "test_type:unit")
    assert unit_tests.returncode == 0, unit_tests.stdout[-4000:]
    assert " PASS=" in unit_tests.stdout and " ERROR=0" in unit_tests.stdout
    # Spend caps: both customers far below their plan's cap; the summary counts them.
    figures = collect_summary(str(get_settings().warehouse_path), pipeline_env.ledger_url)
    assert figures.entitlement_states == {"ok": 2}
    # The fixture's subscriptions carry no billing-cycle anchor: calendar months.
    assert figures.billing_anchor_days == {1: 2}
    events = local_meter_events(stripe_server)
    assert len(events) == EXPECTED_METER_EVENTS
    sent: dict[tuple[str, str], int] = {}
    for event in events:
        payload = event["payload"]
        assert isinstance(payload, dict)
        key = (str(payload["stripe_customer_id"]), str(event["event_name"]))
        sent[key] = sent.get(key, 0) + int(payload["value"])
    assert sent[("cus_alpha0000000001", "nimbus_large__input_tokens")] == 370_000
    assert sent[("cus_alpha0000000001", "nimbus_large__requests")] == 2
    assert sent[("cus_beta00000000002", "nimbus_small__output_tokens")] == 110_000
    assert ("cus_beta00000000002", "nimbus_small__cache_read_tokens") in sent  # 1 Oct only
    assert Decimal(0) not in {Decimal(str(e["payload"]["value"])) for e in events}  # type: ignore[index]


def _latest_check_metadata(asset: str, check: str) -> dict[str, dg.MetadataValue]:
    """The metadata of a check's latest evaluation, as the Dagster UI shows it."""
    instance = prepare_instance(get_settings())
    history = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey(asset), check), limit=1
    )
    assert history, f"{asset}:{check} never ran"
    event = history[0].event
    assert event is not None and event.dagster_event is not None
    return dict(event.dagster_event.event_specific_data.metadata)  # type: ignore[union-attr]


MONEY_COLUMN_WORDS = ("amount", "price", "minor", "fee", "balance", "credit", "receivable")


def _float_money_columns() -> list[tuple[str, str, str, str]]:
    """Money columns stored as binary floating point anywhere in the warehouse (must be none)."""
    with duckdb.connect(str(get_settings().warehouse_path), read_only=True) as conn:
        columns = conn.execute(
            "select table_schema, table_name, column_name, data_type "
            "from information_schema.columns "
            "where data_type in ('FLOAT', 'DOUBLE', 'REAL') or data_type like 'FLOAT%'"
        ).fetchall()
    return [c for c in columns if any(word in c[2].lower() for word in MONEY_COLUMN_WORDS)]


def test_a_day_without_files_runs_clean_on_a_new_warehouse(
    pipeline_env: PipelineEnvironment, stripe_server: str
) -> None:
    """The schedule runs days with no usage too (a quiet day, or before the first file): every
    asset and model must build from empty tables, and nothing is posted or sent."""
    _run(date(2026, 10, 5), date(2026, 10, 5))
    # The dbt step hands its warehouse to dbt's process only: a process that bills another
    # data directory next must not keep this warehouse through a leftover variable.
    assert "METERBOOK_WAREHOUSE_PATH" not in os.environ
    assert _ledger_state(pipeline_env.ledger_url)[0] == 0
    assert local_meter_events(stripe_server) == []
    with duckdb.connect(str(get_settings().warehouse_path), read_only=True) as conn:
        assert conn.execute("select count(*) from invoice_accuracy").fetchone() == (0,)


def _grant_credit(ledger_url: str, number: int, request: CreditGrantRequest) -> None:
    """A grant through the billing API's own write path, given on 30 September."""
    config = api_config(ledger_url, get_settings().data_dir / "customers.csv")
    context = RequestContext(
        principal=Principal(name="finance", role=Role.FINANCE),
        request_id=f"req-{number}",
        method="POST",
        path=f"/customers/{BETA}/credits",
        idempotency_key=f"grant-{number}",
    )
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        migrate(conn)
        store.ensure_schema(conn)
        result = grant_credit(
            conn,
            config,
            context,
            customer_id=BETA,
            customer_currency="usd",
            request=request,
            now=datetime(2026, 9, 30, 12, tzinfo=UTC),
        )
    assert result.status_code == 201, result.body


def test_a_partition_run_again_or_backfilled_over_changes_nothing(
    pipeline_env: PipelineEnvironment, stripe_server: str
) -> None:
    """After a clean run of both days: the same partition run again, then a single-run backfill
    overlapping both, each leave the clean run's ledger hash, meter events and no duplicate row
    for any natural key. Beta holds two credit grants, so credit applications and an expiry
    are among what must not be posted twice."""
    write_customers(get_settings().data_dir / "customers.csv", [BETA])
    # Promotional 30, spent first, expiring at the end of 1 October (27.20 of usage: 25.65 on
    # the 1st, 1.55 on the 2nd); prepaid 5 pays what the 2nd brings.
    _grant_credit(
        pipeline_env.ledger_url,
        1,
        CreditGrantRequest(
            amount_minor=Decimal(30),
            currency="usd",
            reason="launch promotion",
            kind="promotional",
            priority=1,
            expires_at=datetime(2026, 10, 2, tzinfo=UTC),
        ),
    )
    _grant_credit(
        pipeline_env.ledger_url,
        2,
        CreditGrantRequest(
            amount_minor=Decimal(5), currency="usd", reason="prepaid top-up", kind="prepaid"
        ),
    )
    _run(DAY_1, DAY_2)
    clean = (_ledger_state(pipeline_env.ledger_url), len(local_meter_events(stripe_server)))
    # 2 grants; 4 applications of the promotion on the 1st, 3 of the prepaid credit on the 2nd
    # (beta's cache reads cost nothing that day), the promotion's expiry.
    assert clean[0][0] == EXPECTED_LEDGER_TRANSACTIONS + 2 + 4 + 3 + 1
    assert clean[1] == EXPECTED_METER_EVENTS
    with Ledger.connect(pipeline_env.ledger_url) as book:
        assert book.balance(unbilled_receivable_account(BETA), "usd") == 0
        assert book.balance(f"customer:{BETA}:promotional_credit", "usd") == 0
        assert book.balance(f"customer:{BETA}:prepaid_credit", "usd") == Decimal("-3.45")
        assert book.balance("platform:promotional_expense", "usd") == Decimal("25.65")
    with duckdb.connect(str(get_settings().warehouse_path), read_only=True) as conn:
        applied = conn.execute(
            "select grant_id, usage_date, sum(amount_minor) from billing.credit_applications "
            "group by all order by all"
        ).fetchall()
        expired = conn.execute(
            "select grant_id, remaining_minor from billing.credit_expiries"
        ).fetchall()
        # Beta's invoice: 28 of usage (EXPECTED_INVOICE_TOTALS), all paid by credit, per line.
        invoiced = conn.execute(
            "select sum(usage_amount_minor), sum(credit_applied_minor), sum(amount_due_minor) "
            "from invoice_credits where customer_id = ?",
            [BETA],
        ).fetchone()
        grants = credit_tables.read_grants(conn)
        charges, _ = credit_tables.usage_charges(conn, {g.terms.customer_id for g in grants})
        dbt_orders = credit_tables.spending_orders(conn)
    # The grants were drawn down in dbt's order (int_credit_grant_slots): the reference rule's.
    reference = reference_spending_orders([g.terms for g in grants], charges)
    assert dbt_orders == {slot: order for slot, order in reference.items() if order}
    assert {order for order in dbt_orders.values()} == {
        ("api-grant-1", "api-grant-2"),  # the 1st: the promotion (priority 1) first
        ("api-grant-2",),  # the 2nd: the promotion has expired
    }
    assert applied == [
        ("api-grant-1", DAY_1, Decimal("25.65")),
        ("api-grant-2", DAY_2, Decimal("1.55")),
    ]
    assert expired == [("api-grant-1", Decimal("4.35"))]
    assert invoiced == (28, 28, 0)
    summary = collect_summary(str(get_settings().warehouse_path), pipeline_env.ledger_url)
    assert summary.credits == [
        CreditSummary("usd", 2, Decimal(35), Decimal("27.20"), Decimal("4.35"))
    ]
    assert summary.credits[0].left_minor == Decimal("3.45")  # the prepaid credit's rest

    _run(DAY_2, DAY_2)  # the same partition twice
    twice = (_ledger_state(pipeline_env.ledger_url), len(local_meter_events(stripe_server)))
    assert twice == clean
    assert set(_duplicate_keys().values()) == {0}

    _run(DAY_1, DAY_2, chunk_days=2)  # a backfill over days already run, in one run
    overlapped = (_ledger_state(pipeline_env.ledger_url), len(local_meter_events(stripe_server)))
    assert overlapped == clean
    assert set(_duplicate_keys().values()) == {0}


def test_a_failing_quality_gate_stops_the_ledger_and_stripe(
    pipeline_env: PipelineEnvironment, stripe_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Simulate an ingestion bug that lets absurd token counts through: GX must block billing."""
    import ingestion.usage_events as usage_events

    monkeypatch.setattr(usage_events, "MAX_TOKENS_PER_EVENT", 10**15)
    raw = pipeline_env.data_dir / "raw" / "usage" / "date=2026-10-01" / "hour=10"
    import gzip

    with gzip.open(raw / "part-0000.ndjson.gz", "rt") as handle:
        lines = handle.read().splitlines()
    lines[0] = lines[0].replace('"input_tokens": 120000', '"input_tokens": 900000000000')
    with gzip.open(raw / "part-0000.ndjson.gz", "wt") as handle:
        handle.write("\n".join(lines) + "\n")

    outcomes = run_days(get_settings(), DAY_1, DAY_1, chunk_days=1)
    assert not outcomes[0].success
    instance = prepare_instance(get_settings())
    evaluations = [
        event.dagster_event.event_specific_data  # type: ignore[union-attr]
        for event in instance.all_logs(outcomes[0].run_id)
        if event.dagster_event is not None
        and event.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    by_name = {e.check_name: e for e in evaluations}
    gate = by_name["accepted_usage_events_suite"]
    assert gate.passed is False
    failed = {f["kwargs"]["column"] for f in gate.metadata["failed_expectations"].value}
    assert failed == {"input_tokens_min", "input_tokens_max"} or failed == {"input_tokens_max"}
    assert local_meter_events(stripe_server) == []
    with Ledger.connect(pipeline_env.ledger_url) as book:
        assert book.verify().transactions == 0


def test_a_ledger_that_drifts_from_the_rating_is_caught(
    pipeline_env: PipelineEnvironment, stripe_server: str
) -> None:
    """A posting the rating does not explain (here: one slipped in by hand) fails the
    conservation test and names its slot."""
    _run(DAY_1, DAY_1)
    slot = next(key for key in EXPECTED_DAILY_AMOUNTS if key[2] == DAY_1.isoformat())
    customer, meter, day = slot
    with Ledger.connect(pipeline_env.ledger_url) as book:
        book.post_many(
            [
                Transaction(
                    key=f"usage_accrual:{customer}:{meter}:{day}:r99",
                    kind="usage_accrual",
                    cause_type="usage_slot",
                    cause_id=f"{customer}:{meter}:{day}",
                    effective_at=datetime.fromisoformat(f"{day}T00:00:00+00:00"),
                    entries=(
                        Entry(unbilled_receivable_account(customer), Decimal("0.01"), "usd"),
                        Entry("platform:usage_revenue", Decimal("-0.01"), "usd"),
                    ),
                )
            ]
        )
    # The next run would bring the slot back to its rated amount (a correcting revision); the
    # check must see the drift before that: copy the ledger and build the finance models now.
    settings = get_settings()
    with (
        psycopg.connect(pipeline_env.ledger_url, autocommit=True) as pg,
        duckdb.connect(str(settings.warehouse_path)) as warehouse,
    ):
        replicate_ledger(pg, warehouse)
    dbt = _dbt("build", "--select", "tag:finance", "--exclude-resource-type", "unit_test")
    assert dbt.returncode == 1
    assert "FAIL 1 ledger_accrues_exactly_what_was_rated" in dbt.stdout, dbt.stdout
    with duckdb.connect(str(get_settings().warehouse_path), read_only=True) as conn:
        drifted = conn.execute(
            "select customer_id, meter_id, cast(usage_date as varchar), ledger_difference_minor "
            "from billing_conservation_daily where status <> 'ok'"
        ).fetchall()
    assert drifted == [(customer, meter, day, Decimal("0.01"))]


def test_the_float_money_check_finds_a_float_amount(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check above can fail: a DOUBLE amount column is reported, a DECIMAL one is not."""
    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as conn:
        conn.execute("create table lines (amount_minor double, price decimal(38, 12), n double)")
    monkeypatch.setenv("METERBOOK_WAREHOUSE_PATH", str(warehouse))
    assert _float_money_columns() == [("main", "lines", "amount_minor", "DOUBLE")]

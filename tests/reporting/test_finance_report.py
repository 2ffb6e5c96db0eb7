"""`meterbook report`: a real pipeline run on the hand fixture, the report written through the
CLI, and the page opened in headless Chromium to check that every chart was drawn."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import psycopg
import pytest
from typer.testing import CliRunner

from orchestration.cli import app
from orchestration.runner import run_days
from orchestration.settings import get_settings
from reporting.finance_report import ACCURACY_TABLE, DISCREPANCIES_TABLE, BillingPeriod
from reporting.money import format_money
from stripe_local.server import LocalStripeServer
from tests.conftest import FIXTURE_STRIPE_NOW
from tests.hand_fixture import BETA, EXPECTED_INVOICE_TOTALS, write_hand_fixture
from tests.reporting import browser

DAY_1 = date(2026, 10, 1)
DAY_2 = date(2026, 10, 2)
PERIOD = "2026-10"
CHARTS_ALWAYS_DRAWN = {"revenue-by-model", "revenue-daily", "metering-lag"}


@pytest.fixture(scope="module")
def pipeline_warehouse(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str
) -> Iterator[Path]:
    """One real pipeline run on the hand fixture for the module; tests work on copies of it."""
    data_dir = tmp_path_factory.mktemp("report_pipeline") / "data"
    data_dir.mkdir()
    database = f"report_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'create database "{database}"')
    with pytest.MonkeyPatch.context() as env:
        env.setenv("METERBOOK_DATA_DIR", str(data_dir))
        env.setenv("METERBOOK_LEDGER_URL", postgres_url.replace("/postgres?", f"/{database}?", 1))
        for name in ("METERBOOK_WAREHOUSE_PATH", "METERBOOK_RAW_DIR", "STRIPE_API_KEY"):
            env.delenv(name, raising=False)
        write_hand_fixture(data_dir)
        with LocalStripeServer(
            db_path=data_dir / "stripe_local.sqlite3",
            now=FIXTURE_STRIPE_NOW,
            seed_customers_csv=data_dir / "raw" / "stripe" / "customers.csv",
        ) as server:
            env.setenv("METERBOOK_STRIPE_API_BASE", server.url)
            outcomes = run_days(get_settings(), DAY_1, DAY_2)
        assert outcomes and all(outcome.success for outcome in outcomes), outcomes
        warehouse = get_settings().warehouse_path
    yield warehouse
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{database}" with (force)')


def _copy_warehouse(source: Path, directory: Path) -> Path:
    """A private copy, so a test can add or drop tables without touching the others'."""
    target = directory / "warehouse.duckdb"
    shutil.copyfile(source, target)
    return target


def _drop_reconciliation_tables(warehouse: Path) -> None:
    with duckdb.connect(str(warehouse)) as conn:
        for name in (ACCURACY_TABLE, DISCREPANCIES_TABLE):
            kind = conn.execute(
                "select table_type from information_schema.tables "
                "where table_schema = current_schema() and table_name = ?",
                [name],
            ).fetchone()
            if kind:
                conn.execute(f"drop {'view' if kind[0] == 'VIEW' else 'table'} {name}")


def _write_known_reconciliation(warehouse: Path) -> None:
    """Stand-ins with known figures in the marts' documented columns: alpha's invoice matches,
    beta's Stripe amount is 3 cents short on one meter."""
    _drop_reconciliation_tables(warehouse)
    with duckdb.connect(str(warehouse)) as conn:
        conn.execute(
            f"""
            create table {DISCREPANCIES_TABLE} as
            select customer_id, billing_period_start_date, meter_id, currency,
                   cast(amount_minor as decimal(38, 12)) as meterbook_amount_minor,
                   cast(amount_minor - stripe_short as decimal(38, 12)) as stripe_amount_minor,
                   cast(amount_minor as decimal(38, 12)) as ledger_amount_minor,
                   cast(-stripe_short as decimal(38, 12)) as stripe_difference_minor,
                   cast(0 as decimal(38, 12)) as ledger_difference_minor,
                   case when stripe_short > 0 then 'meter event not sent yet' end
                       as likely_cause,
                   case when stripe_short > 0 then 'stripe_mismatch' else 'ok' end as status
            from (
                select *, case when customer_id = '{BETA}'
                    and meter_id = 'nimbus_small__input_tokens' then 3 else 0 end as stripe_short
                from invoice_lines
                where line_type = 'usage'
            )
            """
        )
        conn.execute(
            f"""
            create table {ACCURACY_TABLE} as
            select billing_period_start_date, currency,
                   cast(count(*) as integer) as invoices_compared,
                   cast(count(*) filter (where differences = 0) as integer) as invoices_matching,
                   cast(count(*) filter (where differences = 0) / count(*) as decimal(9, 4))
                       as matching_share,
                   cast(sum(differences) as decimal(38, 12)) as total_abs_difference_minor,
                   cast(max(differences) as decimal(38, 12)) as largest_difference_minor,
                   cast(sum(amount) filter (where differences > 0) as decimal(38, 12))
                       as revenue_at_risk_minor
            from (
                select customer_id, billing_period_start_date, currency,
                       sum(abs(stripe_difference_minor)) as differences,
                       sum(meterbook_amount_minor) as amount
                from {DISCREPANCIES_TABLE}
                group by all
            )
            group by all
            """
        )


def _report(tmp_path: Path, warehouse: Path, *arguments: str) -> tuple[int, str, Path]:
    output = tmp_path / "finance.html"
    result = CliRunner().invoke(
        app,
        ["report", "--period", PERIOD, "--output", str(output), *arguments],
        env={"METERBOOK_WAREHOUSE_PATH": str(warehouse), "METERBOOK_DATA_DIR": str(tmp_path)},
    )
    return result.exit_code, result.output, output


def _assert_self_contained(page: str) -> None:
    assert "<script src" not in page.lower()
    assert "<link" not in page.lower()
    assert "cdn.jsdelivr" not in page
    assert "window.vegaEmbed" in page  # the library itself is inline


def test_report_of_a_pipeline_run_draws_every_chart(
    pipeline_warehouse: Path, tmp_path: Path
) -> None:
    warehouse = _copy_warehouse(pipeline_warehouse, tmp_path)
    _write_known_reconciliation(warehouse)

    exit_code, output, page_path = _report(tmp_path, warehouse)

    assert exit_code == 0, output
    page = page_path.read_text(encoding="utf-8")
    _assert_self_contained(page)
    # Exact money, from invoice_lines: 2,152 (152 of usage, Pro's fee of 2,000) and 28 cents.
    for customer, cents in EXPECTED_INVOICE_TOTALS.items():
        assert customer in page
        assert format_money(Decimal(cents), "usd") in page
    assert "$21.80" in page  # the period's invoiced total
    assert "$1.5138" in page  # alpha's exact rated amount, sub-cent digits kept
    assert "meter event not sent yet" in page
    assert "not computed yet" not in page.lower()

    dom = browser.dump_dom(page_path, tmp_path / "profile")
    charts = browser.chart_containers(dom)
    assert set(charts) == CHARTS_ALWAYS_DRAWN | {"accuracy"}
    assert browser.undrawn_charts(dom) == {}

    shot = browser.screenshot(
        page_path, tmp_path / "profile", tmp_path / "report.png", width=1200, height=2000
    )
    blank_page = tmp_path / "blank.html"
    blank_page.write_text("<!DOCTYPE html><html><body></body></html>", encoding="utf-8")
    blank = browser.screenshot(
        blank_page, tmp_path / "profile", tmp_path / "blank.png", width=1200, height=2000
    )
    assert browser.png_size(shot) == (1200, 2000)
    # A white page compresses to almost nothing; text and charts do not.
    assert shot.stat().st_size > 10 * blank.stat().st_size, (shot.stat(), blank.stat())


def test_missing_reconciliation_tables_are_named_and_the_rest_still_draws(
    pipeline_warehouse: Path, tmp_path: Path
) -> None:
    warehouse = _copy_warehouse(pipeline_warehouse, tmp_path)
    _drop_reconciliation_tables(warehouse)

    exit_code, output, page_path = _report(tmp_path, warehouse)

    assert exit_code == 0, output
    page = page_path.read_text(encoding="utf-8")
    assert "Not computed yet</strong>: run the pipeline" in page
    assert f"<code>{ACCURACY_TABLE}</code>" in page
    assert f"<code>{DISCREPANCIES_TABLE}</code>" in page
    dom = browser.dump_dom(page_path, tmp_path / "profile")
    assert set(browser.chart_containers(dom)) == CHARTS_ALWAYS_DRAWN
    assert browser.undrawn_charts(dom) == {}


def test_the_chart_check_fails_when_the_javascript_does_not_run(
    pipeline_warehouse: Path, tmp_path: Path
) -> None:
    exit_code, output, page_path = _report(tmp_path, _copy_warehouse(pipeline_warehouse, tmp_path))
    assert exit_code == 0, output
    page = page_path.read_text(encoding="utf-8")
    # The bundle no longer defines vegaEmbed: every chart call throws.
    assert page.count("window.vegaEmbed=") == 1
    page_path.write_text(page.replace("window.vegaEmbed=", "window.vegaEmbedGone="), "utf-8")

    problems = browser.undrawn_charts(browser.dump_dom(page_path, tmp_path / "profile"))

    assert set(problems) >= CHARTS_ALWAYS_DRAWN
    assert all("no marks svg" in problem for problem in problems.values()), problems


def test_an_empty_period_says_so(pipeline_warehouse: Path, tmp_path: Path) -> None:
    warehouse = _copy_warehouse(pipeline_warehouse, tmp_path)
    output = tmp_path / "empty.html"
    result = CliRunner().invoke(
        app,
        ["report", "--period", "2026-09", "--output", str(output)],
        env={"METERBOOK_WAREHOUSE_PATH": str(warehouse), "METERBOOK_DATA_DIR": str(tmp_path)},
    )
    assert result.exit_code == 0, result.output
    page = output.read_text(encoding="utf-8")
    assert "No usage billed in this period." in page
    assert "No metered usage in this period." in page


@pytest.mark.parametrize("period", ["2026-13", "2026-1", "October 2026", "2026-10-01", ""])
def test_a_malformed_period_is_a_usage_error(period: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["report", "--period", period],
        env={"METERBOOK_DATA_DIR": str(tmp_path), "COLUMNS": "200"},
    )
    assert result.exit_code == 2, result.output
    assert "--period" in result.output
    assert "a billing period is a month like 2026-10" in result.output


def test_a_missing_warehouse_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["report", "--period", PERIOD],
        env={
            "METERBOOK_DATA_DIR": str(tmp_path),
            "METERBOOK_WAREHOUSE_PATH": str(tmp_path / "never-built.duckdb"),
        },
    )
    assert result.exit_code == 1, result.output
    assert "no warehouse at" in result.output
    assert "run the pipeline first" in result.output
    assert not (tmp_path / "reports").exists()


def test_billing_period_is_a_calendar_month() -> None:
    assert BillingPeriod.parse("2026-12") == BillingPeriod(date(2026, 12, 1), date(2027, 1, 1))
    assert BillingPeriod.parse("2026-02").end == date(2026, 3, 1)
    assert BillingPeriod.parse("2026-02").label == "2026-02"


@pytest.mark.parametrize(
    ("amount_minor", "currency", "expected"),
    [
        (Decimal("123456"), "usd", "$1,234.56"),
        (Decimal("152"), "usd", "$1.52"),
        (Decimal("12.5"), "usd", "$0.125"),
        (Decimal("151.380000000000"), "usd", "$1.5138"),
        (Decimal("-3"), "usd", "-$0.03"),
        (Decimal("0E-12"), "usd", "$0.00"),
        (Decimal("1500"), "jpy", "¥1,500"),
        (Decimal("99"), "chf", "CHF 0.99"),
        (-1241, "usd", "-$12.41"),  # whole minor units arrive as BIGINT from the marts
    ],
)
def test_money_is_shown_exactly(amount_minor: Decimal | int, currency: str, expected: str) -> None:
    assert format_money(amount_minor, currency) == expected

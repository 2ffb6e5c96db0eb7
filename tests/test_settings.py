"""Where things live can be pointed elsewhere without editing code."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestration.cli import app
from orchestration.settings import get_settings
from tests.dbt_cli import run_dbt


def test_raw_data_and_warehouse_can_live_outside_the_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("METERBOOK_RAW_DIR", str(tmp_path / "landing"))
    monkeypatch.setenv("METERBOOK_WAREHOUSE_PATH", str(tmp_path / "wh" / "billing.duckdb"))
    settings = get_settings()
    assert settings.raw_usage_dir == (tmp_path / "landing" / "usage").resolve()
    assert settings.raw_stripe_dir == (tmp_path / "landing" / "stripe").resolve()
    assert settings.warehouse_path == (tmp_path / "wh" / "billing.duckdb").resolve()
    result = CliRunner().invoke(
        app,
        [
            "generate",
            "--days",
            "1",
            "--customers",
            "3",
            "--events-per-day",
            "20",
            "--end-date",
            "2026-10-01",
        ],
    )
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "landing" / "usage").rglob("*.ndjson.gz"))
    assert (tmp_path / "landing" / "stripe" / "customers.csv").exists()
    assert not (tmp_path / "data" / "raw").exists()


def test_the_price_book_can_live_outside_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """METERBOOK_PRICE_BOOK_DIR: dbt seeds that directory (its prices reach the warehouse) and
    the API and the sample-data generator read the same files."""
    import csv
    import shutil

    import duckdb

    from api.config import config_from_env
    from orchestration.settings import DBT_PROJECT_DIR

    prices = tmp_path / "our_prices"
    shutil.copytree(DBT_PROJECT_DIR / "seeds", prices)
    charges = prices / "price_book_charges.csv"
    with charges.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[0]["unit_price_minor"] = "0.0123"
    with charges.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plans = prices / "price_book_plans.csv"
    plans.write_text(plans.read_text().replace(",usd,", ",eur,"))

    monkeypatch.setenv("METERBOOK_PRICE_BOOK_DIR", str(prices))
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path / "data"))
    warehouse = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("METERBOOK_WAREHOUSE_PATH", str(warehouse))
    settings = get_settings()
    assert settings.price_book_dir == prices.resolve()
    assert config_from_env(settings, "postgresql://unused").currencies == {"eur"}

    seeded = run_dbt("seed", warehouse=warehouse, work_dir=tmp_path)
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        price = conn.execute(
            "select unit_price_minor from price_book_charges where plan_id = ? and meter_id = ? "
            "and effective_from = ?",
            [rows[0]["plan_id"], rows[0]["meter_id"], rows[0]["effective_from"]],
        ).fetchone()
        currencies = conn.execute("select distinct currency from price_book_plans").fetchall()
    assert price is not None and str(price[0]).rstrip("0") == "0.0123"
    assert currencies == [("eur",)]

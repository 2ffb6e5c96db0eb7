"""Where things live can be pointed elsewhere without editing code."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestration.cli import app
from orchestration.settings import get_settings


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

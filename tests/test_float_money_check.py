"""The dbt build fails when any money column of the warehouse is a float type (the project's
on-run-end hook), and passes when money is DECIMAL."""

from __future__ import annotations

import subprocess
from pathlib import Path

import duckdb
import pytest

from tests.dbt_cli import run_dbt


def run_the_check(warehouse: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return run_dbt(
        "run-operation",
        "fail_on_float_money_columns",
        warehouse=warehouse,
        work_dir=tmp_path,
        env=_environment(),
    )


def _environment() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "METERBOOK_PRICE_BOOK_DIR"}


@pytest.mark.parametrize(
    ("columns", "refused"),
    [
        ("amount_minor decimal(38, 12), unit_price_minor decimal(38, 12), ratio double", None),
        (
            "amount_minor double, quantity bigint, prepaid_credit_balance float",
            "main.lines.amount_minor (DOUBLE), main.lines.prepaid_credit_balance (FLOAT)",
        ),
    ],
)
def test_a_float_money_column_fails_the_build(
    tmp_path: Path, columns: str, refused: str | None
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as conn:
        conn.execute(f"create table lines ({columns})")
    completed = run_the_check(warehouse, tmp_path)
    output = completed.stdout + completed.stderr
    if refused is None:
        assert completed.returncode == 0, output
    else:
        assert completed.returncode != 0 and refused in output, output

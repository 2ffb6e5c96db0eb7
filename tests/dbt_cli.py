"""dbt itself (not through Dagster) on a scratch warehouse, with its own target and log paths
so the project's manifest, which Dagster loads, is never rewritten by a test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from orchestration.settings import DBT_PROJECT_DIR


def run_dbt(
    *arguments: str, warehouse: Path, work_dir: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "dbt"),
            *arguments,
            "--project-dir",
            str(DBT_PROJECT_DIR),
            "--profiles-dir",
            str(DBT_PROJECT_DIR),
            "--target-path",
            str(work_dir / "dbt_target"),
            "--log-path",
            str(work_dir / "dbt_logs"),
        ],
        env={**(os.environ if env is None else env), "METERBOOK_WAREHOUSE_PATH": str(warehouse)},
        capture_output=True,
        text=True,
        timeout=300,
    )

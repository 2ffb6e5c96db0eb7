"""Launch the daily billing job through Dagster from the command line.

Runs go to the one Dagster instance home under the data directory, so the UI (`dagster dev` with
the same ``DAGSTER_HOME``) shows them in its run history and asset catalogue.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import dagster as dg

from orchestration.settings import Settings

INSTANCE_YAML = """\
# Written by meterbook. DuckDB allows one writing process per file, so runs of this project are
# serialised: one run at a time, and one step at a time in the warehouse pool.
concurrency:
  runs:
    max_concurrent_runs: 1
  pools:
    default_limit: 1
telemetry:
  enabled: false
"""


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    first_day: date
    last_day: date
    success: bool


def prepare_instance(settings: Settings) -> dg.DagsterInstance:
    """The persistent Dagster instance under ``<data>/dagster`` (created on first use)."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(INSTANCE_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def day_chunks(first_day: date, last_day: date, chunk_days: int) -> list[tuple[date, date]]:
    """Split an inclusive day range into inclusive chunks of at most ``chunk_days`` days."""
    if last_day < first_day:
        raise ValueError(f"The range ends ({last_day}) before it starts ({first_day}).")
    chunks = []
    start = first_day
    while start <= last_day:
        end = min(start + timedelta(days=chunk_days - 1), last_day)
        chunks.append((start, end))
        start = end + timedelta(days=1)
    return chunks


def run_days(
    settings: Settings,
    first_day: date,
    last_day: date,
    *,
    chunk_days: int = 31,
    on_chunk_done: Callable[[RunOutcome], None] | None = None,
    log_level: str = "WARNING",
) -> list[RunOutcome]:
    """Materialise the daily partitions ``first_day..last_day`` (inclusive), chunk by chunk.

    A chunk is one Dagster run over a partition range (the assets' single-run backfill policy),
    which runs dbt once for the whole chunk.
    """
    instance = prepare_instance(settings)
    from orchestration.definitions import build_definitions

    job = build_definitions(settings).resolve_job_def("daily_billing")
    outcomes = []
    for start, end in day_chunks(first_day, last_day, chunk_days):
        if start == end:
            tags = {}
            partition_key: str | None = start.isoformat()
        else:
            tags = {
                "dagster/asset_partition_range_start": start.isoformat(),
                "dagster/asset_partition_range_end": end.isoformat(),
            }
            partition_key = None
        result = job.execute_in_process(
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
            instance=instance,
            partition_key=partition_key,
            tags={**tags, "meterbook/launched_by": "cli"},
            raise_on_error=False,
        )
        outcome = RunOutcome(
            run_id=result.run_id, first_day=start, last_day=end, success=result.success
        )
        outcomes.append(outcome)
        if on_chunk_done:
            on_chunk_done(outcome)
        if not result.success:
            break
    return outcomes


def dagster_home_hint(settings: Settings) -> str:
    return f"DAGSTER_HOME={Path(settings.dagster_home)} uv run dagster dev"

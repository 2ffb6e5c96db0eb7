"""Launch the daily billing job through Dagster from the command line.

Runs go to the one Dagster instance home under the data directory, so the UI (`dagster dev` with
the same ``DAGSTER_HOME``) shows them in its run history and asset catalogue.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path

import dagster as dg

from orchestration.settings import Settings

INSTANCE_YAML_HEADER = "# Written by meterbook"
# DuckDB allows one writing process per file, so runs of this project are serialised: one run at
# a time, and one step at a time in the warehouse pool.
INSTANCE_CONCURRENCY_YAML = """\
concurrency:
  runs:
    max_concurrent_runs: 1
  pools:
    default_limit: 1
telemetry:
  enabled: false
"""
INSTANCE_YAML = (
    "{header}; rewritten when meterbook's settings change (delete this line to keep your edits).\n"
    + INSTANCE_CONCURRENCY_YAML
    + """\
# Dagster's SQLite storage in its usual layout; the event log keeps its database connections
# between events (orchestration/instance_storage.py).
run_storage:
  module: dagster._core.storage.runs
  class: SqliteRunStorage
  config:
    base_dir: {home}/history
event_log_storage:
  module: orchestration.instance_storage
  class: PooledSqliteEventLogStorage
  config:
    base_dir: {home}/history/runs
schedule_storage:
  module: dagster._core.storage.schedules
  class: SqliteScheduleStorage
  config:
    base_dir: {home}/schedules
"""
)


LAUNCHED_BY_TAG = "meterbook/launched_by"
# Held by the process running the CLI's runs; the kernel releases it when that process dies.
RUN_LOCK_FILE = "meterbook-runs.lock"


class RunInProgressError(RuntimeError):
    """Another process is running this instance's billing runs right now."""


@dataclass(frozen=True)
class RunOutcome:
    """One chunk's billing run; the last chunk's also names the reconciliation run after it."""

    run_id: str
    first_day: date
    last_day: date
    success: bool
    reconciliation_run_id: str | None = None


def prepare_instance(settings: Settings) -> dg.DagsterInstance:
    """The persistent Dagster instance under ``<data>/dagster`` (created on first use)."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    wanted = INSTANCE_YAML.format(header=INSTANCE_YAML_HEADER, home=home.resolve())
    if not config.exists() or (
        config.read_text().startswith(INSTANCE_YAML_HEADER) and config.read_text() != wanted
    ):
        config.write_text(wanted)
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


@contextmanager
def exclusive_runs(instance: dg.DagsterInstance, settings: Settings) -> Iterator[list[str]]:
    """Hold the instance's run lock while running; yields the runs found orphaned.

    A run the CLI launched is executed in the launching process, so it ends with that process:
    a process killed by SIGKILL, the OOM killer or a lost machine leaves its run marked started
    and its slot in the warehouse pool claimed, and every later run would wait for that slot
    for ever. Once this lock is ours, no CLI run is alive: each CLI run still marked in progress
    is marked failed and its pool slots are freed, as Dagster's run monitoring does for runs it
    launched itself. Its writes are left to the re-run, which is idempotent.
    """
    path = settings.dagster_home / RUN_LOCK_FILE
    with path.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunInProgressError(
                f"Another meterbook process is running billing runs on {settings.dagster_home} "
                f"(it holds {path.name}); wait for it to finish."
            ) from None
        yield fail_orphaned_runs(instance)


def fail_orphaned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark the CLI's runs still in progress failed and free their pool slots; returns their
    ids. Call only while holding the run lock (``exclusive_runs``)."""
    orphans = instance.get_runs(
        filters=dg.RunsFilter(
            statuses=[
                dg.DagsterRunStatus.NOT_STARTED,
                dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED,
                dg.DagsterRunStatus.CANCELING,
            ],
            tags={LAUNCHED_BY_TAG: "cli"},
        )
    )
    for run in orphans:
        instance.report_run_failed(
            run,
            message=(
                "The process running this run died without finishing it (killed or lost); "
                "marked failed by the next meterbook run, which bills what it left undone."
            ),
        )
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
    return [run.run_id for run in orphans]


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
    """Bill the daily partitions ``first_day..last_day`` (inclusive) chunk by chunk, then
    reconcile them with Stripe once.

    A chunk is one run of the billing job over a partition range (the assets' single-run
    backfill policy, which runs dbt once for the whole chunk). When every chunk billed, one run
    of the Stripe reconciliation job over the whole range reads Stripe's counts back
    (``orchestration/jobs.py``): each customer and meter once, however many chunks there were.
    Its run id is on the last outcome, whose ``success`` then covers it too.
    """
    instance = prepare_instance(settings)
    from orchestration.definitions import build_definitions

    definitions = build_definitions(settings)
    billing = definitions.resolve_job_def("daily_billing")
    reconciliation = definitions.resolve_job_def("stripe_reconciliation")
    with exclusive_runs(instance, settings):
        outcomes = []
        for start, end in day_chunks(first_day, last_day, chunk_days):
            run_id, success = _run(instance, billing, start, end, log_level)
            outcome = RunOutcome(run_id=run_id, first_day=start, last_day=end, success=success)
            if success and end == last_day:
                reconciled_id, success = _run(
                    instance, reconciliation, first_day, last_day, log_level
                )
                outcome = replace(outcome, success=success, reconciliation_run_id=reconciled_id)
            outcomes.append(outcome)
            if on_chunk_done:
                on_chunk_done(outcome)
            if not outcome.success:
                break
        return outcomes


def _run(
    instance: dg.DagsterInstance, job: dg.JobDefinition, start: date, end: date, log_level: str
) -> tuple[str, bool]:
    """One run of ``job`` over the partitions ``start..end`` (one partition, or a range)."""
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
        tags={**tags, LAUNCHED_BY_TAG: "cli"},
        raise_on_error=False,
    )
    return result.run_id, result.success


def dagster_home_hint(settings: Settings) -> str:
    return f"DAGSTER_HOME={Path(settings.dagster_home)} uv run dagster dev"

"""A CLI run whose process was killed leaves its Dagster run started and its warehouse pool slot
claimed; the next CLI run marks it failed and frees the slot instead of waiting for it for ever.

Found by the crash harness (tests/reliability/test_crashes.py): a run killed inside ingestion
kept the `duckdb_warehouse` pool's only slot, and the re-run's first warehouse step waited for
it without end.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from orchestration.runner import (
    LAUNCHED_BY_TAG,
    RUN_LOCK_FILE,
    RunInProgressError,
    exclusive_runs,
    prepare_instance,
)
from orchestration.settings import get_settings

POOL = "duckdb_warehouse"


@dg.op
def noop() -> None:
    pass


@dg.job
def killed_job() -> None:
    noop()


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dg.DagsterInstance:
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return prepare_instance(get_settings())


def test_a_killed_cli_run_is_marked_failed_and_its_pool_slot_freed(
    instance: dg.DagsterInstance,
) -> None:
    storage = instance.event_log_storage
    storage.initialize_concurrency_limit_to_default(POOL)
    # What the killed process left: its run started, the pool's slot claimed by its step.
    orphan = instance.create_run_for_job(
        killed_job, status=dg.DagsterRunStatus.STARTED, tags={LAUNCHED_BY_TAG: "cli"}
    )
    other = instance.create_run_for_job(killed_job, status=dg.DagsterRunStatus.STARTED)
    assert storage.claim_concurrency_slot(POOL, orphan.run_id, "usage_events").is_claimed
    blocked = storage.claim_concurrency_slot(POOL, "next-run", "usage_events")
    assert not blocked.is_claimed  # the next run would wait here for ever
    storage.free_concurrency_slots_for_run("next-run")

    with exclusive_runs(instance, get_settings()) as orphans:
        assert orphans == [orphan.run_id]
        run = instance.get_run_by_id(orphan.run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
        assert storage.get_concurrency_info(POOL).claimed_slots == []
        assert storage.claim_concurrency_slot(POOL, "next-run", "usage_events").is_claimed
    # A run the CLI did not launch (the UI's, monitored by Dagster's daemon) is left alone.
    untouched = instance.get_run_by_id(other.run_id)
    assert untouched is not None and untouched.status == dg.DagsterRunStatus.STARTED


def test_a_second_cli_process_is_refused_while_one_runs(instance: dg.DagsterInstance) -> None:
    lock = get_settings().dagster_home / RUN_LOCK_FILE
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            f"handle = open({str(lock)!r}, 'a+')\n"
            "fcntl.flock(handle, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunInProgressError), exclusive_runs(instance, get_settings()):
            pass
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 10
    while True:  # the kernel released the dead holder's lock
        try:
            with exclusive_runs(instance, get_settings()) as orphans:
                assert orphans == []
            break
        except RunInProgressError:
            assert time.monotonic() < deadline
            time.sleep(0.05)

"""The Dagster instance meterbook writes: its event log keeps connections, stays in Dagster's
format, and holds only a few database files open."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from orchestration.instance_storage import KEPT_ENGINES, PooledSqliteEventLogStorage
from orchestration.runner import INSTANCE_YAML_HEADER, prepare_instance
from orchestration.settings import get_settings


def _entry(run_id: str, message: str) -> dg.EventLogEntry:
    return dg.EventLogEntry(
        error_info=None,
        level="INFO",
        user_message=message,
        run_id=run_id,
        timestamp=time.time(),
    )


def test_events_written_with_kept_connections_read_back_with_dagsters_own_storage(
    tmp_path: Path,
) -> None:
    pooled = PooledSqliteEventLogStorage(str(tmp_path))
    run_ids = [uuid.uuid4().hex for _ in range(KEPT_ENGINES + 4)]
    for run_id in run_ids:
        for number in range(3):
            pooled.store_event(_entry(run_id, f"{run_id} event {number}"))
    # The index and the most recent runs' files stay open; older ones were closed.
    assert len(pooled._engines) == KEPT_ENGINES
    pooled.store_event(_entry(run_ids[0], "a closed file opened again"))
    pooled.dispose()
    assert pooled._engines == {}

    stock = SqliteEventLogStorage(str(tmp_path))
    messages = {
        run_id: [e.user_message for e in stock.get_logs_for_run(run_id)] for run_id in run_ids
    }
    assert messages[run_ids[0]][-1] == "a closed file opened again"
    assert all(len(found) == 3 for run_id, found in messages.items() if run_id != run_ids[0])


def test_meterbooks_instance_file_is_kept_current_and_a_users_own_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path / "data"))
    settings = get_settings()
    instance = prepare_instance(settings)
    assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
    config = settings.dagster_home / "dagster.yaml"
    written = config.read_text()
    config.write_text(written.replace("max_concurrent_runs: 1", "max_concurrent_runs: 3"))
    prepare_instance(settings)
    assert config.read_text() == written  # meterbook's own file: rewritten

    assert written.startswith(INSTANCE_YAML_HEADER)
    users_own = written.split("\n", 1)[1].replace(
        "max_concurrent_runs: 1", "max_concurrent_runs: 3"
    )
    config.write_text(users_own)
    prepare_instance(settings)
    assert config.read_text() == users_own  # no header: the user's edits stay

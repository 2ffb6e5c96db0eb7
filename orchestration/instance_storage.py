"""Dagster's SQLite event log, with its database connections kept between events.

Every event a run records (a step started, an asset materialised for a partition, a dbt test's
check result: about 700 for one billing day, 1,600 for a ten-day backfill) made Dagster's SQLite
event log create and dispose a database engine per connection, several connections per event:
~27 ms an event here, a third of a day's run. This storage keeps one engine per database file
(the cross-run index and the most recent runs' files) and is otherwise Dagster's own: same files,
same schema, so an instance switches to it, or back, without losing history.

``dagster.yaml`` (written by ``orchestration.runner.prepare_instance``) names it; the webserver
and every run process load it from there.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from dagster._serdes import ConfigurableClassData
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

# Database files whose engine (one open SQLite connection each) is kept; the least recently
# used beyond this is disposed, so a long-lived webserver does not hold every run's file open.
KEPT_ENGINES = 8


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` reusing one engine per database file instead of one per use."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        super().__init__(base_dir, inst_data=inst_data)

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> PooledSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        # Dagster's lock serialises this storage's users (the event log watcher is a thread),
        # so one connection per file is never used by two threads at once.
        with self._db_lock:
            engine = self._engine(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def _engine(self, shard: str) -> Engine:
        engine = self._engines.get(shard)
        if engine is not None:
            self._engines.move_to_end(shard)
            return engine
        connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False}
        if shard not in self._initialized_dbs:
            # Creating the schema opens connections inside connections: as Dagster does it.
            first_use = create_engine(
                self.conn_string_for_shard(shard), poolclass=NullPool, connect_args=connect_args
            )
            self._initdb(first_use)
            first_use.dispose()
            self._initialized_dbs.add(shard)
        # One connection kept open; a second, if ever needed at once, is opened and closed.
        engine = create_engine(
            self.conn_string_for_shard(shard),
            pool_size=1,
            max_overflow=2,
            connect_args=connect_args,
        )
        self._engines[shard] = engine
        while len(self._engines) > KEPT_ENGINES:
            _, oldest = self._engines.popitem(last=False)
            oldest.dispose()
        return engine

    def dispose(self) -> None:
        super().dispose()
        with self._db_lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()

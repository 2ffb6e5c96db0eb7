"""A small, bounded pool of autocommit PostgreSQL connections for the API's worker threads.

Bounded so that a burst of requests cannot take every connection the ledger's server has (the
pipeline posts through the same server); a request that waits too long for one gets a 503.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import pq

from api.errors import ApiError

CHECKOUT_TIMEOUT_SECONDS = 10.0


class ConnectionPool:
    def __init__(self, url: str, *, size: int, timeout_seconds: float = CHECKOUT_TIMEOUT_SECONDS):
        if size < 1:
            raise ValueError(f"The pool needs at least one connection, not {size}.")
        self._url = url
        self._timeout_seconds = timeout_seconds
        self._slots = threading.BoundedSemaphore(size)
        self._idle: queue.LifoQueue[psycopg.Connection] = queue.LifoQueue()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A connection with no transaction open; returned to the pool if it is still sound."""
        if not self._slots.acquire(timeout=self._timeout_seconds):
            raise ApiError(
                503,
                "busy",
                f"Every ledger connection was busy for {self._timeout_seconds:.0f} s; retry.",
                headers={"Retry-After": "1"},
            )
        conn: psycopg.Connection | None = None
        try:
            conn = self._take()
            yield conn
        finally:
            if conn is not None:
                self._give_back(conn)
            self._slots.release()

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    def _take(self) -> psycopg.Connection:
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return psycopg.connect(self._url, autocommit=True)
            if not conn.closed and not conn.broken:
                return conn
            conn.close()

    def _give_back(self, conn: psycopg.Connection) -> None:
        sound = (
            not conn.closed
            and not conn.broken
            and conn.info.transaction_status == pq.TransactionStatus.IDLE
        )
        if sound:
            self._idle.put(conn)
        else:
            conn.close()

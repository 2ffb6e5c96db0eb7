"""Post to the ledger inside a database transaction the caller already holds, so that the API's
own rows (idempotency key, grant, audit record) and the ledger's entries commit together.

``Ledger.post_many`` opens its own transaction with ``conn.transaction()``, which inside an open
transaction becomes a savepoint; and the ledger seals each transaction's entries to the
*top-level* transaction id (``ledger.check_new_entries`` compares ``xmin`` with
``pg_current_xact_id()``), which rows written in a savepoint do not carry. So the ledger is
given the caller's connection with ``transaction()`` joining the open transaction instead.

What is lost: ``post_many`` retries a batch once when a concurrent writer committed one of its
keys first, which needs the savepoint; here the API's keys are derived from an Idempotency-Key
whose row the caller holds locked, so no one else posts them, and any error aborts the whole
request (nothing written). The ledger could offer this itself: ``post_many`` on a cursor of an
open transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import psycopg
from psycopg import pq

from ledger import Ledger, PostResult, Transaction


class _JoinOpenTransaction:
    """The connection as ``Ledger`` uses it, with ``transaction()`` joining the open one."""

    autocommit = True  # what Ledger checks: it must not rely on psycopg's implicit transactions

    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn

    def transaction(self) -> AbstractContextManager[None]:
        if self._conn.info.transaction_status != pq.TransactionStatus.INTRANS:
            raise RuntimeError("post_in_open_transaction needs an open database transaction.")
        return nullcontext()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def post_in_open_transaction(
    conn: psycopg.Connection, transactions: Iterable[Transaction]
) -> PostResult:
    """Post in the caller's open transaction: committed or rolled back with it."""
    return Ledger(_JoinOpenTransaction(conn)).post_many(transactions)  # type: ignore[arg-type]

"""The warehouse replica of the ledger: complete, incremental, exact, and never missing a posting
that committed after a later one."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from pathlib import Path

import duckdb
import psycopg

from ledger import Ledger
from ledger.replication import ReplicationResult, replicate_ledger
from tests.ledger.helpers import transfer
from tests.ledger.test_lifecycle import grants


def replica_balances(warehouse: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], Decimal]:
    rows = warehouse.execute(
        "select account, currency, sum(amount_minor) from ledger.entries group by all"
    ).fetchall()
    return {(account, currency): Decimal(total) for account, currency, total in rows}


def test_the_replica_is_complete_exact_and_incremental(
    book: Ledger, ledger_url: str, tmp_path: Path
) -> None:
    book.post_many([*grants(), transfer("t1", "a", "b", "0.000000000001")])
    with (
        psycopg.connect(ledger_url, autocommit=True) as pg,
        duckdb.connect(str(tmp_path / "warehouse.duckdb")) as warehouse,
    ):
        first = replicate_ledger(pg, warehouse)
        assert (first.transactions_copied, first.entries_copied) == (3, 6)
        assert replica_balances(warehouse) == {key: value for key, value in book.balances().items()}
        assert warehouse.execute(
            "select data_type from information_schema.columns "
            "where table_name = 'entries' and column_name = 'amount_minor'"
        ).fetchone() == ("DECIMAL(38,12)",)

        book.post_many([transfer("t2", "a", "c", "5"), transfer("t1", "a", "b", "0.000000000001")])
        second = replicate_ledger(pg, warehouse)
        assert (second.transactions_copied, second.entries_copied) == (1, 2)
        assert second.transactions_in_replica == 4
        again = replicate_ledger(pg, warehouse)
        assert (again.transactions_copied, again.entries_copied) == (0, 0)
        assert warehouse.execute("select count(*) from ledger.accounts").fetchone() == (
            len(book.balances()),
        )


def test_a_posting_still_open_is_waited_for_not_skipped(
    book: Ledger, ledger_url: str, tmp_path: Path
) -> None:
    """A posting that took a lower id but commits after a higher one is not skipped: the copy
    waits for it, so the watermark never passes an id that could still appear."""
    book.post_many([transfer("t0", "a", "b", "1")])
    slow = psycopg.connect(ledger_url)  # not autocommit: its transaction stays open
    slow.execute(
        "insert into ledger.transactions (transaction_key, kind, cause_type, cause_id, "
        "effective_at, content_hash) values ('slow', 'k', 'c', 'i', now(), %s)",
        ["0" * 64],
    )
    slow.execute(
        "insert into ledger.entries (transaction_id, account, amount_minor, currency) "
        "select id, x.account, x.amount, 'usd' from ledger.transactions, "
        "(values ('a', 2::numeric), ('b', -2::numeric)) as x(account, amount) "
        "where transaction_key = 'slow'"
    )
    book.post_many([transfer("fast", "a", "b", "3")])  # a higher id, committed first

    results: list[ReplicationResult] = []

    def copy() -> None:
        with (
            psycopg.connect(ledger_url, autocommit=True) as pg,
            duckdb.connect(str(tmp_path / "warehouse.duckdb")) as warehouse,
        ):
            results.append(replicate_ledger(pg, warehouse))

    copier = threading.Thread(target=copy)
    copier.start()
    time.sleep(0.5)
    assert copier.is_alive(), "the copy did not wait for the open posting"
    slow.commit()
    slow.close()
    copier.join(30)
    assert results and results[0].transactions_copied == 3

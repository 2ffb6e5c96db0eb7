"""Writers at once, each on its own connection: no duplicates, no deadlocks, no overdraft."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import psycopg

from ledger import (
    Account,
    Ledger,
    LedgerBalanceError,
    LedgerConflictError,
    PostResult,
    Transaction,
    migrate,
)
from ledger.migrations import migration_files
from tests.ledger.helpers import transfer

Result = TypeVar("Result")
JOIN_TIMEOUT_SECONDS = 60


def run_together(work: list[Callable[[], Result]]) -> tuple[list[Result], list[BaseException]]:
    """Start every callable at the same moment on its own thread; collect results and errors."""
    results: list[Result] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(work))

    def run(job: Callable[[], Result]) -> None:
        start.wait()
        try:
            results.append(job())
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(job,)) for job in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_SECONDS)
        assert not thread.is_alive(), "a writer hung: deadlock or lock leak"
    return results, errors


def poster(url: str, batch: list[Transaction]) -> Callable[[], PostResult]:
    def post() -> PostResult:
        with Ledger.connect(url) as own:
            return own.post_many(batch)

    return post


def test_overlapping_batches_post_each_key_exactly_once(book: Ledger, ledger_url: str) -> None:
    """Overlapping batches in different orders from several connections, touching shared
    accounts: no deadlock, no duplicate, every key posted exactly once."""
    every = [transfer(f"k{n:02d}", f"acct{n % 7}", f"acct{(n + 3) % 7}", "0.01") for n in range(80)]
    batches = []
    for writer_number in range(8):
        batch = every[writer_number * 8 : writer_number * 8 + 24]
        random.Random(writer_number).shuffle(batch)
        batches.append(batch)
    results, errors = run_together([poster(ledger_url, batch) for batch in batches])
    assert not errors
    posted_keys = {t.key for batch in batches for t in batch}
    assert sum(r.created for r in results) == len(posted_keys)
    assert sum(r.created + r.existing for r in results) == sum(len(b) for b in batches)
    report = book.verify()
    assert (report.transactions, report.entries) == (len(posted_keys), 2 * len(posted_keys))
    assert report.ok
    for account in {f"acct{n}" for n in range(7)}:
        expected = sum(
            (
                e.amount_minor
                for t in every
                if t.key in posted_keys
                for e in t.entries
                if e.account == account
            ),
            start=0,
        )
        assert book.balance(account, "usd") == expected


def test_writers_opening_the_same_new_accounts_at_once(book: Ledger, ledger_url: str) -> None:
    """Writers open the same brand-new accounts in the same instant, round after round; none
    may fail (connected beforehand, so that their inserts really race)."""
    ledgers = [Ledger.connect(ledger_url) for _ in range(6)]
    try:
        for round_number in range(80):
            debit, credit = f"new{round_number}:debit", f"new{round_number}:credit"
            jobs = [
                partial(own.post_many, [transfer(f"r{round_number}w{n}", debit, credit, "1")])
                for n, own in enumerate(ledgers)
            ]
            results, errors = run_together(jobs)
            assert not errors
            assert len(results) == len(ledgers)
    finally:
        for own in ledgers:
            own.close()
    assert book.verify().transactions == 80 * len(ledgers)


def test_racing_writers_of_one_key_with_different_content(book: Ledger, ledger_url: str) -> None:
    """One of them posts; every other is told the key exists with other content."""
    contenders = [[transfer("same", "a", "b", str(n + 1))] for n in range(6)]
    results, errors = run_together([poster(ledger_url, batch) for batch in contenders])
    assert results == [PostResult(created=1, existing=0)]
    assert len(errors) == 5
    assert all(isinstance(error, LedgerConflictError) for error in errors), errors
    assert book.verify().transactions == 1


def test_concurrent_spenders_never_overdraw_a_guarded_account(
    book: Ledger, ledger_url: str
) -> None:
    book.open_accounts([Account("wallet", "usd", normal_side="debit", must_not_go_negative=True)])
    book.post_many([transfer("fund", "wallet", "deposits", "10")])
    spenders = [[transfer(f"spend{n}", f"shop{n}", "wallet", "3")] for n in range(6)]
    results, errors = run_together([poster(ledger_url, batch) for batch in spenders])
    assert len(results) == 3  # 3 x 3 fits in 10; a fourth would overdraw
    assert len(errors) == 3
    assert all(isinstance(error, LedgerBalanceError) for error in errors)
    assert book.balance("wallet", "usd") == 1
    assert book.verify().ok


def test_migrations_apply_once_even_concurrently(ledger_url: str) -> None:
    def run() -> list[str]:
        with psycopg.connect(ledger_url, autocommit=True) as conn:
            return migrate(conn)

    applied, errors = run_together([run] * 4)
    assert not errors
    everything = [path.name for path in migration_files()]
    assert sorted(applied, key=len) == [[], [], [], everything]
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        assert migrate(conn) == []
        names = conn.execute("select name from ledger.schema_migrations order by name").fetchall()
    assert [name for (name,) in names] == everything

"""Posting processes killed mid-batch, and posting processes racing each other.

Each test runs ``tests.ledger.posting_worker`` as a real OS process against the session's
PostgreSQL and compares the ledger hash with that of an uninterrupted run.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from ledger import Ledger

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SLOTS = 25_000
BATCH = 5_000
# Where to kill: in batch N's open database transaction, this long after it was seen open
# (early: staging and inserting transactions; later: entries and the commit-time checks).
KILL_POINTS = [(0, 0.0), (0, 0.08), (1, 0.02), (1, 0.15), (2, 0.05), (2, 0.12), (3, 0.0)]
WORKER_NAME = "meterbook_posting_worker"


def worker(url: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.ledger.posting_worker",
            url,
            "--slots",
            str(SLOTS),
            "--batch",
            str(BATCH),
            *extra,
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> str:
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    return stdout


@pytest.fixture(scope="module")
def clean_hash(postgres_url: str) -> str:
    """The hash of one uninterrupted run, in a database of its own."""
    name = f"clean_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    url = postgres_url.replace("/postgres?", f"/{name}?", 1)
    finish(worker(url))
    with Ledger.connect(url) as book:
        report = book.verify()
    assert report.ok and report.transactions == SLOTS
    return report.content_hash


@pytest.mark.parametrize(("batch_number", "delay"), KILL_POINTS)
def test_a_posting_killed_mid_batch_then_rerun_equals_a_clean_run(
    new_database: Callable[[], str], clean_hash: str, batch_number: int, delay: float
) -> None:
    url = new_database()
    Ledger.connect(url).close()  # migrated before the worker starts: the kill hits posting
    process = worker(f"{url}&application_name={WORKER_NAME}")
    assert process.stdout is not None
    for line in process.stdout:
        if line.strip() == f"start {batch_number}":
            break
    with psycopg.connect(url, autocommit=True) as observer:
        while not observer.execute(
            "select count(*) from pg_stat_activity "
            "where application_name = %s and xact_start is not null",
            [WORKER_NAME],
        ).fetchone()[0]:  # type: ignore[index]
            time.sleep(0.001)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    with Ledger.connect(url) as book:
        interrupted = book.verify()
    assert interrupted.ok, interrupted.problems()
    assert interrupted.transactions % BATCH == 0  # whole batches or nothing of one
    assert interrupted.transactions <= (batch_number + 1) * BATCH

    rerun = finish(worker(url))
    with Ledger.connect(url) as book:
        final = book.verify(recompute_hashes=True)
    assert final.ok
    assert final.content_hash == clean_hash
    posted_again = sum(
        int(line.split("created=")[1].split()[0])
        for line in rerun.splitlines()
        if line.startswith("done")
    )
    assert posted_again == SLOTS - interrupted.transactions


def test_two_processes_posting_overlapping_batches(
    new_database: Callable[[], str], clean_hash: str
) -> None:
    """One posts everything in order, the other the second half last batch first: every key is
    posted exactly once, neither fails, and the result is the clean run's."""
    url = new_database()
    Ledger.connect(url).close()
    forward = worker(url)
    backward = worker(url, "--first", str(SLOTS // 2 - BATCH // 2), "--reverse")
    outputs = [finish(forward), finish(backward)]
    created = sum(
        int(line.split("created=")[1].split()[0])
        for output in outputs
        for line in output.splitlines()
        if line.startswith("done")
    )
    assert created == SLOTS
    with Ledger.connect(url) as book:
        report = book.verify(recompute_hashes=True)
    assert report.ok and report.transactions == SLOTS
    assert report.content_hash == clean_hash

"""Ledger batch posting speed, a no-op re-post of the same batch, and the warehouse copy.

    uv run python bench/ledger_posting.py --transactions 50000 --batches 4

In one run, on a fresh embedded PostgreSQL (the ledger's default):

- post: ``--batches`` batches of ``--transactions`` usage accruals (two entries each) into a
  ledger that grows with each batch; entries per second over all batches;
- re-post (retry): the last batch again, the same values in the same process (what a retry after
  a lost commit acknowledgement does): nothing is written; its time as a share of the post's;
- re-post (new process): the same batch rebuilt from scratch (hashes not cached);
- replicate: the whole ledger copied into a DuckDB file, then an incremental copy of nothing.

It also prints the CPU time each side spends per post (this Python process; the embedded
PostgreSQL's processes, from Linux's /proc): wall-clock times swing when other processes share
the cores, the work done does not.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import date
from decimal import Decimal
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import duckdb  # noqa: E402
import psycopg  # noqa: E402

from ledger import Ledger, Transaction, embedded_ledger_url  # noqa: E402
from ledger.replication import replicate_ledger  # noqa: E402
from ledger.usage_accruals import RatedSlot, plan_usage_accruals  # noqa: E402


def batch_of_accruals(number: int, size: int) -> list[Transaction]:
    """``size`` customer-meter slots of day ``number``: 2,000 customers x meters, sub-cent."""
    day = date.fromordinal(date(2026, 1, 1).toordinal() + number)
    rated = [
        RatedSlot(
            customer_id=f"cus_{slot % 2000:05d}",
            meter_id=f"meter_{slot // 2000:03d}",
            usage_date=day,
            currency="usd",
            amount_minor=Decimal(slot * 7919 % 1_000_000) / Decimal(10_000) + Decimal("0.0001"),
        )
        for slot in range(size)
    ]
    return plan_usage_accruals(rated, posted={}, usage_dates={day})


def _cpu_seconds(pid: int, *, with_children: bool = False) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if with_children:
        ticks += int(fields[13]) + int(fields[14])  # children that exited (parallel workers)
    return ticks / os.sysconf("SC_CLK_TCK")


def server_cpu_seconds(data_dir: Path) -> float | None:
    """CPU time used so far by the embedded server: its postmaster and every process it
    started (the posting connection's backend, WAL writer, checkpointer). None without /proc."""
    try:
        postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
        children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
        total = _cpu_seconds(postmaster, with_children=True)
    except OSError:
        return None
    for child in children:
        try:
            total += _cpu_seconds(int(child))
        except OSError:
            continue  # exited since it was listed
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transactions", type=int, default=50_000, help="per batch")
    parser.add_argument("--batches", type=int, default=4)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="mbbench"))
    url = embedded_ledger_url(data_dir)
    batches = [batch_of_accruals(number, args.transactions) for number in range(args.batches)]
    entries_per_batch = sum(len(t.entries) for t in batches[0])

    with Ledger.connect(url) as book:
        post_seconds = []
        python_started, server_started = time.process_time(), server_cpu_seconds(data_dir)
        for batch in batches:
            started = time.perf_counter()
            result = book.post_many(batch)
            post_seconds.append(time.perf_counter() - started)
            assert result.created == len(batch), result
        python_cpu = (time.process_time() - python_started) / len(batches)
        server_ended = server_cpu_seconds(data_dir)
        started = time.perf_counter()
        retry = book.post_many(batches[-1])
        retry_seconds = time.perf_counter() - started
        assert (retry.created, retry.existing) == (0, len(batches[-1]))
        rebuilt = batch_of_accruals(args.batches - 1, args.transactions)
        started = time.perf_counter()
        fresh = book.post_many(rebuilt)
        fresh_seconds = time.perf_counter() - started
        assert fresh.created == 0
        report = book.verify()
        assert report.ok

    with (
        tempfile.TemporaryDirectory() as scratch,
        psycopg.connect(url, autocommit=True) as pg,
        duckdb.connect(str(Path(scratch) / "warehouse.duckdb")) as warehouse,
    ):
        started = time.perf_counter()
        copied = replicate_ledger(pg, warehouse)
        replicate_seconds = time.perf_counter() - started
        started = time.perf_counter()
        replicate_ledger(pg, warehouse)
        noop_replicate_seconds = time.perf_counter() - started

    total_entries = entries_per_batch * args.batches
    mean_post = sum(post_seconds) / len(post_seconds)
    print(f"ledger: {report.transactions:,} transactions, {report.entries:,} entries")
    print(
        f"post: {args.batches} batches of {args.transactions:,} transactions "
        f"({entries_per_batch:,} entries): "
        + ", ".join(f"{s:.2f} s" for s in post_seconds)
        + f" -> {total_entries / sum(post_seconds):,.0f} entries/s"
    )
    if server_started is not None and server_ended is not None:
        server_cpu = (server_ended - server_started) / len(batches)
        print(f"CPU per post: Python {python_cpu:.2f} s, PostgreSQL {server_cpu:.2f} s")
    print(
        f"re-post, same values (retry): {retry_seconds:.3f} s = "
        f"{retry_seconds / mean_post:.1%} of a post"
    )
    print(
        f"re-post, rebuilt values (new process): {fresh_seconds:.3f} s = "
        f"{fresh_seconds / mean_post:.1%} of a post"
    )
    print(
        f"replicate to DuckDB: {copied.entries_copied:,} entries in {replicate_seconds:.2f} s "
        f"({copied.entries_copied / replicate_seconds:,.0f} entries/s); "
        f"nothing new: {noop_replicate_seconds:.3f} s"
    )


if __name__ == "__main__":
    main()

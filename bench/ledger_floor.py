"""What each of the ledger's per-row guarantees costs a batch post, and what a post costs with
none of them (the floor), each on a fresh embedded PostgreSQL.

    uv run python bench/ledger_floor.py --transactions 50000 --batches 3

The ledger's schema is built by its migrations, then one configuration's changes are applied
(dropping an index, a check or a trigger), then ``--batches`` batches of usage accruals are posted
as ``bench/ledger_posting.py`` posts them. The first batch warms the server up and is not counted.
Per post it prints the wall time, this process's CPU time (building the content hashes and the
COPY rows) and the server's CPU time; entries/s from the wall time.

The configurations other than ``as built`` are experiments, not alternatives: each removes
something the ledger relies on (balances per account read the account index, the content-hash
check keeps the stored hashes comparable, the statement triggers prove every transaction
balanced). They show where a post's time goes, and so how far a schema could go.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
sys.path.insert(0, str(PROJECT_ROOT / "bench"))

import psycopg  # noqa: E402
from ledger_posting import batch_of_accruals, server_cpu_seconds  # noqa: E402

from ledger import Ledger, embedded_ledger_url  # noqa: E402

WITHOUT_ENTRY_ID = [
    "alter table ledger.entries drop constraint entries_pkey",
    "alter table ledger.entries alter column id drop default",
    "alter table ledger.entries alter column id drop not null",
]
WITHOUT_ACCOUNT_INDEX = ["drop index ledger.entries_account"]
WITHOUT_TRANSACTION_INDEX = ["drop index ledger.entries_transaction"]
WITHOUT_KIND_INDEX = ["drop index ledger.transactions_kind_effective"]
WITHOUT_ROW_CHECKS = [
    "alter table ledger.transactions drop constraint transactions_content_hash_sha256",
    "alter table ledger.transactions drop constraint transactions_key_length",
]
METADATA_AS_TEXT = [
    "alter table ledger.transactions alter column metadata drop default",
    "alter table ledger.transactions alter column metadata type text",
]
WITHOUT_ENTRIES_TRIGGER = ["alter table ledger.entries disable trigger entries_checked"]

CONFIGURATIONS: dict[str, list[str]] = {
    "as built": [],
    "without the entry id (sequence and primary key)": WITHOUT_ENTRY_ID,
    "without the entries' account index": WITHOUT_ACCOUNT_INDEX,
    "without the entries' transaction index": WITHOUT_TRANSACTION_INDEX,
    "without the transactions' (kind, effective_at) index": WITHOUT_KIND_INDEX,
    "without the per-row checks (hash, key length)": WITHOUT_ROW_CHECKS,
    "metadata as text, not jsonb": METADATA_AS_TEXT,
    "without the entries statement check": WITHOUT_ENTRIES_TRIGGER,
    "floor: all of the above": WITHOUT_ENTRY_ID
    + WITHOUT_ACCOUNT_INDEX
    + WITHOUT_TRANSACTION_INDEX
    + WITHOUT_KIND_INDEX
    + WITHOUT_ROW_CHECKS
    + METADATA_AS_TEXT
    + WITHOUT_ENTRIES_TRIGGER,
}


def measure(changes: list[str], transactions: int, batches: int) -> tuple[float, float, float]:
    """Mean wall, Python CPU and server CPU seconds of the posts after the first."""
    data_dir = Path(tempfile.mkdtemp(prefix="mbfloor"))
    url = embedded_ledger_url(data_dir)
    # Built here, so that their content hashes are computed inside the timed posts.
    planned = [batch_of_accruals(number, transactions) for number in range(batches)]
    timings = []
    with Ledger.connect(url) as book:
        with psycopg.connect(url, autocommit=True) as admin:
            for statement in changes:
                admin.execute(statement)  # type: ignore[arg-type]
        for batch in planned:
            server_started = server_cpu_seconds(data_dir) or 0.0
            python_started = time.process_time()
            started = time.perf_counter()
            book.post_many(batch)
            timings.append(
                (
                    time.perf_counter() - started,
                    time.process_time() - python_started,
                    (server_cpu_seconds(data_dir) or 0.0) - server_started,
                )
            )
    counted = timings[1:]
    return tuple(sum(t[i] for t in counted) / len(counted) for i in range(3))  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--transactions", type=int, default=50_000, help="per batch")
    parser.add_argument("--batches", type=int, default=3, help="the first is not counted")
    parser.add_argument("--rounds", type=int, default=2, help="times through every configuration")
    args = parser.parse_args()
    entries = 2 * args.transactions
    print(f"{args.transactions:,} transactions ({entries:,} entries) a post; mean of the posts")
    print(f"{'configuration':55s} {'wall':>7s} {'Python':>7s} {'server':>7s} {'entries/s':>10s}")
    for _ in range(args.rounds):
        for name, changes in CONFIGURATIONS.items():
            wall, python, server = measure(changes, args.transactions, args.batches)
            print(
                f"{name:55s} {wall:6.2f}s {python:6.2f}s {server:6.2f}s {entries / wall:10,.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()

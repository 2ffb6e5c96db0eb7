"""What reading and validating one day's raw lines costs, writing nothing, against the bare query.

    uv run python bench/ingestion_floor.py --events 20000000

The end-to-end benchmark (``bench/end_to_end.py``) compares the whole billing job with a bare
DuckDB query that reads the day's files, keeps the first copy of each ``event_id`` and sums
tokens. This one times, in one run and each in a fresh process, the part of ingestion that no
design of the pipeline can skip: every line of the day read as it is (so that a line that is not
valid JSON can be quarantined with its text) and classified by the data contract's rules
(``ingestion/usage_events.py``: JSON, types, ranges, timestamps, known customers), with the
pipeline's DuckDB memory limit and nothing written but the lines themselves. Its ratio to the
bare query is a floor for the end-to-end ratio before deduplication across days, writes, dbt,
the ledger, Stripe and each run's fixed cost.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
sys.path.insert(0, str(PROJECT_ROOT / "bench"))

from end_to_end import (  # noqa: E402
    BENCH_DAY,
    in_subprocess,
    measured_in_subprocess,
    peak_memory_mib,
)


def measure_floor(data_dir: Path, day: date) -> dict[str, float]:
    import duckdb

    from ingestion import usage_events

    raw_usage_dir = data_dir / "raw" / "usage"
    files = usage_events.day_files(raw_usage_dir, day)
    customers = data_dir / "raw" / "stripe" / "customers.csv"
    with tempfile.TemporaryDirectory() as scratch:
        conn = duckdb.connect(str(Path(scratch) / "floor.duckdb"))
        conn.execute("set memory_limit = '1GB'")  # METERBOOK_DUCKDB_MEMORY_LIMIT's default
        conn.execute(
            "create temp table known_customers as select distinct cast(id as varchar) as id "
            "from read_csv(?)",
            [str(customers)],
        )
        started = time.perf_counter()
        usage_events._load_raw_lines(conn, files, raw_usage_dir)
        read = time.perf_counter() - started
        started = time.perf_counter()
        lines, refused = conn.execute(
            f"select count(*), count(reason) from ({usage_events._classified_sql(day)})"
        ).fetchone()  # type: ignore[misc]
        classified = time.perf_counter() - started
        conn.close()
    return {
        "read_seconds": read,
        "classify_seconds": classified,
        "lines": lines,
        "refused": refused,
        "peak_mib": peak_memory_mib(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000_000)
    parser.add_argument("--customers", type=int, default=2_000)
    parser.add_argument("--data-dir", type=Path, help="a day generated before (skips generating)")
    parser.add_argument("--measure-floor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--day", type=date.fromisoformat, default=BENCH_DAY)
    args = parser.parse_args()
    if args.measure_floor:
        print(json.dumps(measure_floor(args.data_dir, args.day)))
        return

    data_dir = args.data_dir
    if data_dir is None:
        from ingestion.sample_data import generate_sample_data

        data_dir = Path(tempfile.mkdtemp(prefix="mbfloor"))
        generate_sample_data(
            data_dir,
            start_date=args.day,
            days=1,
            customers=args.customers,
            events_per_day=args.events,
            seed=1,
            price_book_dir=PROJECT_ROOT / "dbt_project" / "seeds",
        )
    baselines = [in_subprocess("baseline", data_dir, args.day) for _ in range(3)]
    baseline = sorted(measured["seconds"] for measured in baselines)[1]
    floor = _floor_in_subprocess(data_dir, args.day)
    both = floor["read_seconds"] + floor["classify_seconds"]
    print(f"day: {data_dir} ({floor['lines']:,} lines, {floor['refused']:,} refused)")
    print(
        f"bare query: {baseline:.1f} s (median of "
        + " / ".join(f"{m['seconds']:.1f}" for m in baselines)
        + ")"
    )
    print(
        f"read every line: {floor['read_seconds']:.1f} s ({floor['read_seconds'] / baseline:.2f}x)"
        f" | classify every line, no writes: {floor['classify_seconds']:.1f} s "
        f"({floor['classify_seconds'] / baseline:.2f}x) | both: {both:.1f} s "
        f"({both / baseline:.2f}x the bare query; peak {floor['peak_mib']:.0f} MiB)"
    )


def _floor_in_subprocess(data_dir: Path, day: date) -> dict[str, float]:
    return measured_in_subprocess(
        [__file__, "--measure-floor", "--data-dir", str(data_dir), "--day", str(day)],
        what="floor measurement",
    )


if __name__ == "__main__":
    main()

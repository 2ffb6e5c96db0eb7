"""What a billing run costs beyond its data: a small multi-day backfill, twice in one go.

The same days (small, so the fixed costs dominate) are billed as one Dagster run in two fresh
data directories: one whose instance uses Dagster's stock SQLite event log (the baseline), one
with meterbook's ``dagster.yaml`` (``orchestration/instance_storage.py``). Prints each run's
seconds, the events it recorded, its slowest steps and the ratio.

    uv run --frozen python bench/run_overhead.py --days 10
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from end_to_end import measured_in_subprocess

FIRST_DAY = date(2026, 10, 1)
SLOWEST_STEPS = 5


def measure(data_dir: Path, days: int) -> dict[str, object]:
    """One run over ``days`` days in ``data_dir`` (its instance already configured), with its
    own local Stripe in its own process on a free port (as Stripe would be), stopped afterwards."""
    from stripe_local.server import free_port, is_running, start_detached

    now = f"{(FIRST_DAY + timedelta(days=days + 1)).isoformat()}T00:00:00Z"
    port = free_port()
    os.environ["METERBOOK_DATA_DIR"] = str(data_dir)
    os.environ["METERBOOK_STRIPE_API_BASE"] = f"http://127.0.0.1:{port}"
    os.environ["METERBOOK_STRIPE_LOCAL_NOW"] = now
    from orchestration.runner import prepare_instance, run_days
    from orchestration.settings import get_settings

    settings = get_settings()
    last_day = FIRST_DAY + timedelta(days=days - 1)
    server = start_detached(
        port=port,
        db_path=settings.stripe_local_db,
        now=now,
        seed_customers_csv=settings.raw_stripe_dir / "customers.csv",
    )
    try:
        deadline = time.monotonic() + 30
        while not is_running(settings.stripe_api_base):
            if time.monotonic() > deadline:
                raise SystemExit("The local Stripe did not start.")
            time.sleep(0.1)
        started = time.perf_counter()
        outcomes = run_days(settings, FIRST_DAY, last_day, chunk_days=days)
        seconds = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=10)
    if not all(outcome.success for outcome in outcomes):
        raise SystemExit(f"The run failed: {outcomes}")
    instance = prepare_instance(settings)
    run_id = outcomes[0].run_id
    events = len(instance.all_logs(run_id))
    steps = [
        (step.step_key, round(step.end_time - step.start_time, 1))
        for step in instance.get_run_step_stats(run_id)
        if step.start_time and step.end_time
    ]
    return {
        "seconds": seconds,
        "events": events,
        "storage": type(instance.event_log_storage).__name__,
        "slowest_steps": sorted(steps, key=lambda item: -item[1])[:SLOWEST_STEPS],
    }


def in_subprocess(data_dir: Path, days: int) -> dict[str, object]:
    return measured_in_subprocess(
        [__file__, "--measure", str(data_dir), "--days", str(days)], what="measurement"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--customers", type=int, default=5)
    parser.add_argument("--events-per-day", type=int, default=50)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.days)))
        return

    from ingestion.sample_data import generate_sample_data
    from orchestration.runner import INSTANCE_CONCURRENCY_YAML
    from orchestration.settings import DBT_PROJECT_DIR

    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    results = {}
    for name in ("stock", "meterbook"):
        data_dir = Path(tempfile.mkdtemp(prefix="mbo")) / "data"
        generate_sample_data(
            data_dir,
            start_date=FIRST_DAY,
            days=args.days,
            customers=args.customers,
            events_per_day=args.events_per_day,
            seed=3,
            price_book_dir=DBT_PROJECT_DIR / "seeds",
        )
        if name == "stock":
            (data_dir / "dagster").mkdir(parents=True)
            # meterbook's settings without its storage or header (prepare_instance keeps it).
            (data_dir / "dagster" / "dagster.yaml").write_text(INSTANCE_CONCURRENCY_YAML)
        results[name] = result = in_subprocess(data_dir, args.days)
        steps = ", ".join(f"{step} {seconds} s" for step, seconds in result["slowest_steps"])
        print(
            f"{name:>9} event log ({result['storage']}): {result['seconds']:.1f} s for "
            f"{args.days} days, {result['events']} events recorded\n    slowest steps: {steps}"
        )
    ratio = float(results["meterbook"]["seconds"]) / float(results["stock"]["seconds"])
    print(f"ratio meterbook / stock: {ratio:.2f}")


if __name__ == "__main__":
    main()

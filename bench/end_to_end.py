"""End-to-end cost of billing one day, against a bare DuckDB query over the same raw files.

    uv run python bench/end_to_end.py --events 5000000 20000000

For each size it generates one day of sample data, then measures, each in a fresh process:

- baseline: one DuckDB query that reads the day's gzip NDJSON, keeps the first copy of each
  event_id and sums tokens and tool cost per customer, event type, model and usage day (no
  validation, no effects);
- pipeline: the billing job for that day (ingest -> dbt -> checks -> ledger -> Stripe meter
  events on the local Stripe-compatible server), as `meterbook run` runs it; the Stripe
  reconciliation job that `meterbook run` runs next (reading Stripe's counts back) is timed
  and printed on its own, outside the ratio: it is not on the billing path;
- empty: the same jobs for a day without files (the fixed overhead).

It prints wall times, the ratio pipeline / baseline (the median of three baseline runs) and the
peak resident memory: of each measuring process exactly (VmHWM), and of the pipeline's process
with its children (dbt) as the highest of samples taken every 0.2 s. Generation time is
reported but not part of any ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date, timedelta
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

BENCH_DAY = date(2026, 10, 1)
BASELINE_SQL = """
with events as (
    select * from read_json(?, format='newline_delimited', columns={
        'event_id': 'VARCHAR', 'customer_id': 'VARCHAR', 'event_type': 'VARCHAR',
        'occurred_at': 'TIMESTAMPTZ', 'received_at': 'TIMESTAMPTZ',
        'properties': 'STRUCT(model VARCHAR, input_tokens BIGINT, output_tokens BIGINT,
                              cache_read_tokens BIGINT, request_kind VARCHAR, tool VARCHAR,
                              cost_minor BIGINT)'},
        ignore_errors=true)
),
first_copies as (
    select * from events
    qualify row_number() over (partition by event_id order by received_at) = 1
)
select customer_id, event_type, properties.model, cast(occurred_at as date) as usage_date,
       count(*), sum(properties.input_tokens), sum(properties.output_tokens),
       sum(properties.cache_read_tokens), sum(properties.cost_minor)
from first_copies group by all
"""


SLOWEST_STEPS = 6


def peak_memory_mib() -> float:
    """This process's peak resident memory (VmHWM), exact.

    Not ``getrusage``'s ``ru_maxrss``: Linux carries it across fork and exec, so a process
    started by the bench (which holds a whole generated day at that moment) reports the
    bench's size as its own peak (a child of a 1.5 GB process reports 1.5 GB while its own
    peak is 13 MB), and a child of the run (dbt) the run's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure_baseline(data_dir: Path, day: date) -> dict[str, float]:
    import duckdb

    pattern = str(data_dir / "raw" / "usage" / f"date={day.isoformat()}" / "hour=*" / "*.ndjson.gz")
    started = time.perf_counter()
    with duckdb.connect() as conn:
        rows = len(conn.execute(BASELINE_SQL, [pattern]).fetchall())
    return {"seconds": time.perf_counter() - started, "rows": rows, "peak_mib": peak_memory_mib()}


class RssSampler:
    """Samples the resident memory of this process and its child processes (dbt, the embedded
    PostgreSQL is not a child of this one) every 0.2 s, to say which step holds the peak."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []  # (unix time, MiB)
        # (unix time, this process's high-water mark in MiB): a spike shorter than the
        # sampling interval still raises it, so the step it rose in holds the spike.
        self.high_water: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            now = time.time()
            self.samples.append((now, _rss_mib_with_children(os.getpid())))
            self.high_water.append((now, peak_memory_mib()))

    def peak_total(self) -> float:
        """The highest sample of this process's and its children's memory together."""
        return max((mib for _, mib in self.samples), default=0.0)

    def high_water_step(self, steps: list[tuple[str, float, float]]) -> tuple[str, float] | None:
        """The step in which this process's high-water mark last rose, and the mark."""
        risen_at = None
        previous = 0.0
        for at, mib in self.high_water:
            if mib > previous:
                risen_at, previous = at, mib
        if risen_at is None:
            return None
        # The mark rose between the sample before and this one: name the step running then.
        for name, start, end in steps:
            if start <= risen_at <= end + 0.2:
                return name, previous
        return "between steps", previous

    def peak_per_step(self, steps: list[tuple[str, float, float]]) -> list[tuple[str, float]]:
        """The highest sample inside each step's start..end, highest first."""
        peaks = []
        for name, start, end in steps:
            inside = [mib for at, mib in self.samples if start <= at <= end]
            if inside:
                peaks.append((name, round(max(inside))))
        return sorted(peaks, key=lambda item: -item[1])[:SLOWEST_STEPS]


def _rss_mib_with_children(pid: int) -> float:
    """Resident memory of ``pid`` and of its direct children, from /proc, in MiB."""
    pids = [pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # the field after the state is the parent's pid
            pids.append(int(stat.parent.name))
    total_kib = 0
    for each in pids:
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
        except OSError:
            continue
    return total_kib / 1024


def measure_pipeline(data_dir: Path, day: date) -> dict[str, float]:
    """The Dagster job for one day; the local Stripe runs in its own process, as Stripe would."""
    from stripe_local.server import free_port, is_running, start_detached

    now = f"{(day + timedelta(days=2)).isoformat()}T00:00:00Z"
    port = free_port()
    os.environ["METERBOOK_DATA_DIR"] = str(data_dir)
    os.environ["METERBOOK_STRIPE_API_BASE"] = f"http://127.0.0.1:{port}"
    os.environ["METERBOOK_STRIPE_LOCAL_NOW"] = now
    from orchestration.runner import run_days
    from orchestration.settings import get_settings

    settings = get_settings()
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
        with RssSampler() as memory:
            outcomes = run_days(settings, day, day, chunk_days=1)
        seconds = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=10)
    if not all(o.success for o in outcomes):
        raise SystemExit(f"The pipeline run failed: {outcomes}")
    check_seconds, slowest = step_seconds(settings, outcomes[0].run_id)
    reconciliation = run_seconds(settings, outcomes[0].reconciliation_run_id)
    _, reconciliation_slowest = step_seconds(settings, outcomes[0].reconciliation_run_id)
    steps = step_times(settings, outcomes[0].run_id) + step_times(
        settings, outcomes[0].reconciliation_run_id
    )
    return {
        # The billing path: everything but the reconciliation run that follows it.
        "seconds": seconds - reconciliation,
        "reconciliation_seconds": reconciliation,
        "reconciliation_steps": reconciliation_slowest,
        # Both jobs ran in this process (and its children): the peaks cover the two. The run's
        # process exactly; with its children (dbt), the highest 0.2 s sample of their sum.
        "peak_mib": max(peak_memory_mib(), memory.peak_total()),
        "peak_mib_parts": (peak_memory_mib(), memory.peak_total()),
        "check_seconds": check_seconds,
        "slowest_steps": slowest,
        "peak_mib_per_step": memory.peak_per_step(steps),
        "high_water_step": memory.high_water_step(steps),
    }


def run_seconds(settings: object, run_id: str | None) -> float:
    """How long one Dagster run took, start to end, by the instance's record of it."""
    from orchestration.runner import prepare_instance

    if run_id is None:
        raise SystemExit("The reconciliation run did not start.")
    stats = prepare_instance(settings).get_run_stats(run_id)  # type: ignore[arg-type]
    if not (stats.start_time and stats.end_time):
        raise SystemExit(f"Run {run_id} has no start or end time.")
    return stats.end_time - stats.start_time


def step_times(settings: object, run_id: str | None) -> list[tuple[str, float, float]]:
    """Each step of a run with its start and end (unix time)."""
    from orchestration.runner import prepare_instance

    instance = prepare_instance(settings)  # type: ignore[arg-type]
    return [
        (step.step_key, step.start_time, step.end_time)
        for step in instance.get_run_step_stats(run_id)  # type: ignore[arg-type]
        if step.start_time and step.end_time
    ]


def step_seconds(settings: object, run_id: str | None) -> tuple[float, list[tuple[str, float]]]:
    """Time the run spent in Dagster asset-check steps (the GX gates and the other checks;
    dbt's own tests run inside the dbt step and are not counted here), and the slowest steps."""
    from orchestration.definitions import build_definitions

    graph = build_definitions(settings).resolve_asset_graph()  # type: ignore[arg-type]
    check_names = {key.name for key in graph.asset_check_keys}
    total = 0.0
    durations: list[tuple[str, float]] = []
    for step_key, start, end in step_times(settings, run_id):
        durations.append((step_key, round(end - start, 1)))
        if any(step_key.endswith(f"_{name}") for name in check_names):
            total += end - start
    return total, sorted(durations, key=lambda item: -item[1])[:SLOWEST_STEPS]


def in_subprocess(kind: str, data_dir: Path, day: date) -> dict[str, float]:
    return measured_in_subprocess(
        [__file__, "--measure", kind, "--data-dir", str(data_dir), "--day", day.isoformat()],
        what=f"{kind} measurement",
    )


def measured_in_subprocess(arguments: list[str], *, what: str) -> dict:
    """Run a bench script with ``arguments`` in a fresh Python process (its own peak memory,
    nothing imported before) and return the JSON object it printed last."""
    completed = subprocess.run(
        [sys.executable, *arguments], capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise SystemExit(f"The {what} failed:\n{completed.stdout}\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, nargs="+", default=[5_000_000, 20_000_000])
    parser.add_argument("--customers", type=int, default=2_000)
    parser.add_argument("--measure", choices=["baseline", "pipeline"])
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--day", type=date.fromisoformat, default=BENCH_DAY)
    args = parser.parse_args()
    if args.measure:
        measure = measure_baseline if args.measure == "baseline" else measure_pipeline
        print(json.dumps(measure(args.data_dir, args.day)))
        return

    from ingestion.sample_data import generate_sample_data

    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    empty_dir = Path(tempfile.mkdtemp(prefix="mbb"))
    generate_sample_data(
        empty_dir,
        start_date=BENCH_DAY,
        days=1,
        customers=args.customers,
        events_per_day=1000,
        seed=1,
        price_book_dir=PROJECT_ROOT / "dbt_project" / "seeds",
    )
    empty_day = BENCH_DAY + timedelta(days=1)
    empty = in_subprocess("pipeline", empty_dir, empty_day)
    print(
        f"empty day (fixed overhead): {empty['seconds']:.1f} s, peak {empty['peak_mib']:.0f} MiB, "
        f"check steps {empty['check_seconds']:.1f} s"
    )
    print_slowest_steps(empty)
    print_reconciliation(empty)
    for events in args.events:
        data_dir = Path(tempfile.mkdtemp(prefix="mbb"))
        started = time.perf_counter()
        generate_sample_data(
            data_dir,
            start_date=BENCH_DAY,
            days=1,
            customers=args.customers,
            events_per_day=events,
            seed=1,
            price_book_dir=PROJECT_ROOT / "dbt_project" / "seeds",
        )
        generated = time.perf_counter() - started
        # The bare query's time varies between runs on this machine (5.6-14.6 s at 5 M in one
        # afternoon): the ratio uses the median of three, before and after the pipeline.
        baselines = [in_subprocess("baseline", data_dir, BENCH_DAY) for _ in range(2)]
        pipeline = in_subprocess("pipeline", data_dir, BENCH_DAY)
        baselines.append(in_subprocess("baseline", data_dir, BENCH_DAY))
        baseline = sorted(baselines, key=lambda measured: measured["seconds"])[1]
        ratio = pipeline["seconds"] / baseline["seconds"]
        runs = " / ".join(f"{measured['seconds']:.1f}" for measured in baselines)
        print(
            f"{events:>11,} events: generate {generated:.0f} s | "
            f"baseline {baseline['seconds']:.1f} s (median of {runs}) "
            f"(peak {baseline['peak_mib']:.0f} MiB) | pipeline {pipeline['seconds']:.1f} s "
            f"(peak {pipeline['peak_mib']:.0f} MiB) | ratio {ratio:.2f} | "
            f"check steps {pipeline['check_seconds']:.1f} s "
            f"({pipeline['check_seconds'] / pipeline['seconds']:.0%} of the run)"
        )
        print_slowest_steps(pipeline)
        print_reconciliation(pipeline)


def print_reconciliation(measured: dict) -> None:
    """The Stripe reconciliation run after billing: not on the billing path, but measured."""
    steps = ", ".join(
        f"{name} {seconds:.1f} s" for name, seconds in measured["reconciliation_steps"]
    )
    seconds = measured["reconciliation_seconds"]
    print(f"    then reconciliation (its own job): {seconds:.1f} s: {steps}")


def print_slowest_steps(measured: dict) -> None:
    steps = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in measured["slowest_steps"])
    print(f"    slowest steps: {steps}")
    peaks = ", ".join(f"{name} {mib:.0f}" for name, mib in measured["peak_mib_per_step"])
    print(f"    peak MiB per step (this process and its children, sampled): {peaks}")
    own, child = measured["peak_mib_parts"]
    print(
        f"    peak over both jobs: the run's process {own:.0f} MiB (exact), "
        f"with its children {child:.0f} MiB (sampled every 0.2 s)"
    )
    if measured["high_water_step"] is not None:
        step, mib = measured["high_water_step"]
        print(f"    the run's process reached {mib:.0f} MiB during: {step}")


if __name__ == "__main__":
    main()

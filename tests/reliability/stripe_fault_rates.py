"""Stripe faults: the same usage billed through a local Stripe that injects 429s, 500s, timeouts
and lost-after-commit answers at several rates; shared by ``test_stripe_fault_rates.py``
(reduced) and ``bench/reliability_stripe_faults.py`` (full).

Each rate gets a pipeline of its own (raw files from the same seed, its own warehouse, ledger
database and local Stripe with a ``FaultPlan``); the days are billed as one backfill, run again
(as the next day's run would) while a run fails because writes are still pending or a read gave
up, up to ``MAX_RUNS`` runs. Then Stripe must hold exactly the usage the pipeline rated, per
customer, meter and day, each meter event once, every outbox write sent; and everything the run
left (``pipeline_state.fingerprint``, ledger content hash included) must be what the same days
leave without faults (``bill_at_rate``: the full form).

The reduced form (``resend_at_rate``) leaves ingestion and dbt out, whose cost is most of a run
and which faults at Stripe do not reach: it sends the shared clean run's rated usage again
through the job's Stripe steps alone, into a fresh outbox and a faulty local Stripe, and
compares Stripe, the outbox and the read-back with the clean run's.

Attempts per write: the outbox counts the requests its sender made for each write (a timeout
and a lost answer included: the server saw them), summed over runs; on the v2 stream a write's
attempts are those of its batch.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import psycopg

from ingestion.sample_data import generate_sample_data
from orchestration.partitions import daily_partitions
from orchestration.resources import ledger_url_outside_dagster
from orchestration.runner import prepare_instance, run_days
from orchestration.settings import DBT_PROJECT_DIR, Settings, get_settings
from stripe_local.faults import FaultPlan
from stripe_local.server import LocalStripeServer
from tests.reliability.pipeline_state import (
    PipelineFingerprint,
    fingerprint,
    stripe_usage_by_slot,
)
from tests.reliability.reruns import Baseline

SCALE_VARIABLE = "METERBOOK_RELIABILITY_SCALE"
FIRST_DAY = date(2026, 10, 1)
DATA_SEED = 20261002
FAULT_SEED = 9
FAULT_KINDS = ("429", "500", "timeout", "lost")
RATES = (0.1, 0.3, 0.5)
# The server holds an injected timeout twice as long as the client waits (as in
# tests/pipeline/test_stripe_faults.py): the client gives up, the server saw the request.
FAULT_TIMEOUT_SECONDS = 0.6
CLIENT_TIMEOUT_SECONDS = 0.3
# At 50 % a call gives up after 6 attempts once in 64, so a run often fails on a read; the
# next run re-reads and sends what is pending.
MAX_RUNS = 8

SetEnv = Callable[[str, str], None]
WRITE_ROUTES = ("POST /v1/billing/meter_events", "POST /v2/billing/meter_event_stream")


@dataclass(frozen=True)
class FaultScale:
    days: int
    customers: int
    events_per_day: int
    # "v1": one request per meter event; "stream": the v2 stream, 100 events a request.
    meter_events_api: str

    @property
    def last_day(self) -> date:
        return FIRST_DAY + timedelta(days=self.days - 1)

    @property
    def stripe_now(self) -> str:
        return f"{(self.last_day + timedelta(days=2)).isoformat()}T00:00:00Z"


SCALES = {
    # One day on v1, so every meter event is a request of its own that a fault can hit.
    "reduced": FaultScale(days=1, customers=1, events_per_day=60, meter_events_api="v1"),
    "full": FaultScale(days=4, customers=5, events_per_day=300, meter_events_api="v1"),
}


def fault_scale() -> str:
    """``reduced`` (CI) or ``full``, from ``METERBOOK_RELIABILITY_SCALE``."""
    scale = os.environ.get(SCALE_VARIABLE, "reduced").strip() or "reduced"
    if scale not in SCALES:
        raise ValueError(f"{SCALE_VARIABLE}={scale!r}: expected one of {', '.join(SCALES)}")
    return scale


@dataclass(frozen=True)
class RateResult:
    rate: float
    meter_events_api: str
    runs: int
    success: bool
    seconds: float
    injected: dict[str, int]
    # Every API request the server saw: those it answered (a lost one included) and those a
    # fault answered before any work.
    requests_seen: int
    writes: int
    write_attempts: int
    write_attempts_max: int
    # Meter event requests the server carried out (those a 429, 500 or timeout answered were
    # not), and keyed requests it answered with a saved response (a retry after a lost answer).
    write_requests_carried_out: int
    idempotent_replays: int
    fingerprint: PipelineFingerprint
    rated: dict[tuple[str, str, str], int]
    metered: dict[tuple[str, str, str], int]

    @property
    def attempts_per_write(self) -> float:
        return self.write_attempts / self.writes if self.writes else 0.0

    @property
    def faults(self) -> int:
        return sum(self.injected.values())

    def exactly_once_problems(self) -> list[str]:
        """What keeps Stripe from holding exactly the rated usage, each event once."""
        problems = list(self.fingerprint.problems())
        if not self.success:
            problems.append(f"still failing after {self.runs} runs")
        if self.metered != self.rated:
            missing = {k: v for k, v in self.rated.items() if self.metered.get(k) != v}
            extra = {k: v for k, v in self.metered.items() if k not in self.rated}
            problems.append(f"Stripe differs from the rating: {missing} / not rated: {extra}")
        if self.fingerprint.meter_events_accepted != self.writes:
            problems.append(
                f"{self.fingerprint.meter_events_accepted} meter events for {self.writes} writes"
            )
        return problems


def write_raw_files(data_dir: Path, scale: FaultScale) -> None:
    generate_sample_data(
        data_dir,
        start_date=FIRST_DAY,
        days=scale.days,
        customers=scale.customers,
        events_per_day=scale.events_per_day,
        seed=DATA_SEED,
        price_book_dir=DBT_PROJECT_DIR / "seeds",
    )


def bill_at_rate(
    rate: float, data_dir: Path, ledger_url: str, scale: FaultScale, set_env: SetEnv
) -> RateResult:
    """Bill the scale's days in a fresh pipeline whose local Stripe injects faults at ``rate``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    write_raw_files(data_dir, scale)
    plan = FaultPlan(
        rate=rate, kinds=FAULT_KINDS, seed=FAULT_SEED, timeout_seconds=FAULT_TIMEOUT_SECONDS
    )
    with LocalStripeServer(
        db_path=data_dir / "stripe_local.sqlite3",
        now=scale.stripe_now,
        seed_customers_csv=data_dir / "raw" / "stripe" / "customers.csv",
        faults=plan,
    ) as server:
        set_env("METERBOOK_DATA_DIR", str(data_dir))
        set_env("METERBOOK_LEDGER_URL", ledger_url)
        # Named too: a dbt asset leaves the last warehouse path it used in os.environ.
        set_env("METERBOOK_WAREHOUSE_PATH", str(data_dir / "warehouse.duckdb"))
        set_env("METERBOOK_STRIPE_API_BASE", server.url)
        set_env("METERBOOK_STRIPE_TIMEOUT_SECONDS", str(CLIENT_TIMEOUT_SECONDS))
        set_env("METERBOOK_STRIPE_METER_EVENTS_API", scale.meter_events_api)
        settings = get_settings()
        prepare_instance(settings)
        started = time.monotonic()
        runs, success = 0, False
        while runs < MAX_RUNS and not success:
            runs += 1
            outcomes = run_days(settings, FIRST_DAY, scale.last_day, chunk_days=scale.days)
            success = all(outcome.success for outcome in outcomes)
        seconds = time.monotonic() - started
        injected = dict(plan.describe()["injected"])
        answered_by_fault = sum(n for kind, n in injected.items() if kind != "lost")
        writes, attempts, attempts_max = _outbox_attempts(ledger_url_outside_dagster(settings))
        return RateResult(
            rate=rate,
            meter_events_api=scale.meter_events_api,
            runs=runs,
            success=success,
            seconds=seconds,
            injected=injected,
            requests_seen=server.store.counter("requests") + answered_by_fault,
            writes=writes,
            write_attempts=attempts,
            write_attempts_max=attempts_max,
            write_requests_carried_out=sum(
                server.store.counter(f"requests:{route}") for route in WRITE_ROUTES
            ),
            idempotent_replays=server.store.counter("idempotent_replays"),
            fingerprint=fingerprint(settings, server),
            rated=rated_quantities(settings.warehouse_path),
            metered=stripe_usage_by_slot(server),
        )


# The Stripe steps of the daily job: sending, the outbox's totals and the read-back.
STRIPE_STEPS = ("stripe_meter_events", "stripe_outbox_slots", "stripe_meter_usage")


def resend_at_rate(
    rate: float, baseline: Baseline, data_dir: Path, ledger_url: str, set_env: SetEnv
) -> RateResult:
    """Send a clean pipeline's rated usage again, to a fresh local Stripe that injects faults at
    ``rate``, through the job's Stripe steps alone (no ingestion or dbt: their output is the
    baseline's warehouse, copied) into a fresh outbox, on v1 so that every meter event is a
    request a fault can hit; run again while a run fails, as the next day's run would."""
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(baseline.warehouse_path, data_dir / "warehouse.duckdb")
    plan = FaultPlan(
        rate=rate, kinds=FAULT_KINDS, seed=FAULT_SEED, timeout_seconds=FAULT_TIMEOUT_SECONDS
    )
    with LocalStripeServer(
        db_path=data_dir / "stripe_local.sqlite3",
        now=baseline.scale.stripe_now,
        seed_customers_csv=baseline.raw_dir / "stripe" / "customers.csv",
        faults=plan,
    ) as server:
        set_env("METERBOOK_DATA_DIR", str(data_dir))
        set_env("METERBOOK_RAW_DIR", str(baseline.raw_dir))
        set_env("METERBOOK_LEDGER_URL", ledger_url)
        set_env("METERBOOK_WAREHOUSE_PATH", str(data_dir / "warehouse.duckdb"))
        set_env("METERBOOK_STRIPE_API_BASE", server.url)
        set_env("METERBOOK_STRIPE_TIMEOUT_SECONDS", str(CLIENT_TIMEOUT_SECONDS))
        set_env("METERBOOK_STRIPE_METER_EVENTS_API", "v1")
        settings = get_settings()
        instance = prepare_instance(settings)
        job = _stripe_steps_job(settings)
        tags = {
            "dagster/asset_partition_range_start": FIRST_DAY.isoformat(),
            "dagster/asset_partition_range_end": baseline.scale.last_day.isoformat(),
        }
        started = time.monotonic()
        runs, success = 0, False
        while runs < MAX_RUNS and not success:
            runs += 1
            success = job.execute_in_process(
                instance=instance, tags=tags, raise_on_error=False
            ).success
        seconds = time.monotonic() - started
        injected = dict(plan.describe()["injected"])
        answered_by_fault = sum(n for kind, n in injected.items() if kind != "lost")
        writes, attempts, attempts_max = _outbox_attempts(ledger_url)
        return RateResult(
            rate=rate,
            meter_events_api="v1",
            runs=runs,
            success=success,
            seconds=seconds,
            injected=injected,
            requests_seen=server.store.counter("requests") + answered_by_fault,
            writes=writes,
            write_attempts=attempts,
            write_attempts_max=attempts_max,
            write_requests_carried_out=sum(
                server.store.counter(f"requests:{route}") for route in WRITE_ROUTES
            ),
            idempotent_replays=server.store.counter("idempotent_replays"),
            fingerprint=fingerprint(settings, server),
            rated=rated_quantities(settings.warehouse_path),
            metered=stripe_usage_by_slot(server),
        )


def _stripe_steps_job(settings: Settings) -> dg.JobDefinition:
    from orchestration.definitions import build_definitions

    job = dg.define_asset_job(
        "stripe_steps",
        selection=dg.AssetSelection.assets(*STRIPE_STEPS),
        partitions_def=daily_partitions,
    )
    definitions = dg.Definitions.merge(build_definitions(settings), dg.Definitions(jobs=[job]))
    return definitions.resolve_job_def("stripe_steps")


def rated_quantities(warehouse_path: Path) -> dict[tuple[str, str, str], int]:
    """What the pipeline rated per (customer, meter, ISO day): what Stripe must hold."""
    with duckdb.connect(str(warehouse_path), read_only=True) as conn:
        rows = conn.execute(
            "select customer_id, meter_id, usage_date, quantity_units from billable_usage_daily "
            "where is_priced and quantity_units > 0"
        ).fetchall()
    return {(c, m, d.isoformat()): int(q) for c, m, d, q in rows}


def _outbox_attempts(ledger_url: str) -> tuple[int, int, int]:
    with psycopg.connect(ledger_url) as conn:
        row = conn.execute(
            "select count(*), coalesce(sum(attempts), 0), coalesce(max(attempts), 0) "
            "from stripe_sync.outbox where operation = 'meter_event'"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])

"""Re-runs: every daily partition run several times, in a seeded random order, with overlapping
backfills; shared by ``test_reruns.py`` (reduced) and ``bench/reliability_reruns.py`` (full).

Two pipelines over the same raw files, each with its own warehouse, ledger database and local
Stripe: a *clean* one that bills the month once, as one backfill, and a *re-run* one whose first
pass runs every partition once in a shuffled order (single days and ranges, so usage often
arrives before the day it occurred on is run) and whose later passes run overlapping ranges in
a shuffled order. After every pass the re-run pipeline is fingerprinted
(``pipeline_state.fingerprint``).

What must hold: after its first pass, the re-run pipeline has what the clean one has in every
respect that does not record arrival order (ledger totals per slot, account and currency; Stripe
usage per customer, meter and day; warehouse tables); every later pass changes nothing at all,
ledger content hash and meter event count included; no natural key has a duplicate row; the
ledger verifies; nothing is left pending or dead in the outbox. The ledger content hash of the
two pipelines differs when the first pass ran days out of order: the ledger posts only the
difference between a slot's rated amount and what it holds, so a slot whose late usage was
billed before its own day is split into other revisions (same totals, other transactions).
"""

from __future__ import annotations

import os
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import psycopg

from ingestion.sample_data import MessRates, generate_sample_data
from orchestration.runner import RunOutcome, prepare_instance, run_days
from orchestration.settings import DBT_PROJECT_DIR, get_settings
from stripe_local.server import LocalStripeServer
from tests.reliability import crashes
from tests.reliability.pipeline_state import PipelineFingerprint, fingerprint

SCALE_VARIABLE = "METERBOOK_RELIABILITY_SCALE"
FIRST_DAY = date(2026, 10, 1)
SEED = 20261001
# An edge messier than the sample data's default, so that order matters: a fifth of the events
# arrive late, half of those one to three days late (billed on an earlier day, often before
# that day is run), and retries and conflicting copies often arrive the next day.
MESS = MessRates(
    late=0.2,
    late_days_share=0.5,
    retry=0.05,
    retry_next_day_share=0.5,
    conflict=0.01,
)


@dataclass(frozen=True)
class RerunScale:
    days: int
    customers: int
    events_per_day: int
    passes: int
    # Units of the first pass: 1 to first_pass_max_days days, no overlap; of later passes:
    # later_min_days to later_max_days days, each overlapping the previous by up to
    # overlap_days.
    first_pass_max_days: int
    later_min_days: int
    later_max_days: int
    overlap_days: int

    @property
    def last_day(self) -> date:
        return FIRST_DAY + timedelta(days=self.days - 1)

    @property
    def stripe_now(self) -> str:
        """The local Stripe's clock: the day after the last (meter events within 35 days)."""
        return f"{(self.last_day + timedelta(days=2)).isoformat()}T00:00:00Z"


SCALES = {
    # CI: two days run out of order (day 2, then day 1), then both again as one backfill.
    "reduced": RerunScale(
        days=2,
        customers=3,
        events_per_day=40,
        passes=2,
        first_pass_max_days=1,
        later_min_days=2,
        later_max_days=2,
        overlap_days=0,
    ),
    # About 15 minutes here: a Dagster run costs 40-90 s whatever its size.
    "full": RerunScale(
        days=7,
        customers=10,
        events_per_day=300,
        passes=5,
        first_pass_max_days=3,
        later_min_days=3,
        later_max_days=5,
        overlap_days=2,
    ),
}


def rerun_scale() -> str:
    """``reduced`` (CI) or ``full``, from ``METERBOOK_RELIABILITY_SCALE``."""
    scale = os.environ.get(SCALE_VARIABLE, "reduced").strip() or "reduced"
    if scale not in SCALES:
        raise ValueError(f"{SCALE_VARIABLE}={scale!r}: expected one of {', '.join(SCALES)}")
    return scale


Unit = tuple[date, date]  # an inclusive range of days; first == last for a single day


def plan_passes(scale: RerunScale, seed: int = SEED) -> list[list[Unit]]:
    """``scale.passes`` passes, each covering every day at least once, in a shuffled order.

    The first pass splits the days into units without overlap (each day runs once in it); a
    first pass that comes out in calendar order is reversed, so usage always arrives before
    its own day somewhere. Later passes overlap consecutive units.
    """
    rng = random.Random(seed)
    passes = []
    for number in range(scale.passes):
        if number == 0:
            units = _covering_units(scale.days, rng, 1, scale.first_pass_max_days, overlap=0)
            rng.shuffle(units)
            if units == sorted(units) and len(units) > 1:
                units.reverse()
        else:
            units = _covering_units(
                scale.days, rng, scale.later_min_days, scale.later_max_days, scale.overlap_days
            )
            rng.shuffle(units)
        passes.append([(_day(start), _day(end)) for start, end in units])
    return passes


def _covering_units(
    days: int, rng: random.Random, min_days: int, max_days: int, overlap: int
) -> list[tuple[int, int]]:
    units = []
    start = 0
    while start < days:
        end = min(days - 1, start + rng.randint(min_days, max_days) - 1)
        units.append((start, end))
        if end == days - 1:
            break
        start = max(start + 1, end + 1 - rng.randint(0, overlap))
    return units


def _day(index: int) -> date:
    return FIRST_DAY + timedelta(days=index)


def describe_unit(unit: Unit) -> str:
    first, last = unit
    if first == last:
        return first.strftime("%d")
    return f"{first.strftime('%d')}-{last.strftime('%d')}"


def days_of(units: list[Unit]) -> set[str]:
    """The ISO days the units cover."""
    return {
        (first + timedelta(days=offset)).isoformat()
        for first, last in units
        for offset in range((last - first).days + 1)
    }


def runs_per_day(passes: list[list[Unit]]) -> dict[date, int]:
    counts: dict[date, int] = {}
    for units in passes:
        for first, last in units:
            day = first
            while day <= last:
                counts[day] = counts.get(day, 0) + 1
                day += timedelta(days=1)
    return counts


SetEnv = Callable[[str, str], None]


@dataclass
class Pipeline:
    """One pipeline's data directory, ledger database and local Stripe."""

    name: str
    data_dir: Path
    ledger_url: str
    scale: RerunScale
    set_env: SetEnv
    server: LocalStripeServer | None = None
    runs: list[RunOutcome] = field(default_factory=list)
    run_seconds: list[float] = field(default_factory=list)

    def activate(self) -> None:
        """Point the environment (and so ``get_settings()``) at this pipeline."""
        assert self.server is not None, "start the pipeline's local Stripe first"
        self.set_env("METERBOOK_DATA_DIR", str(self.data_dir))
        self.set_env("METERBOOK_LEDGER_URL", self.ledger_url)
        # Named too: a dbt asset leaves the last warehouse path it used in os.environ, which
        # get_settings() prefers to the data directory's.
        self.set_env("METERBOOK_WAREHOUSE_PATH", str(self.data_dir / "warehouse.duckdb"))
        self.set_env("METERBOOK_STRIPE_API_BASE", self.server.url)
        prepare_instance(get_settings())

    def run(self, unit: Unit) -> RunOutcome:
        """One Dagster run of the unit's days (a single-run backfill for a range)."""
        self.activate()
        started = time.monotonic()
        outcomes = run_days(get_settings(), unit[0], unit[1], chunk_days=self.scale.days)
        self.run_seconds.append(time.monotonic() - started)
        assert len(outcomes) == 1, outcomes
        self.runs.append(outcomes[0])
        return outcomes[0]

    def fingerprint(self) -> PipelineFingerprint:
        self.activate()
        assert self.server is not None
        return fingerprint(get_settings(), self.server)

    def run_killed_at(self, unit: Unit, crash_at: str) -> crashes.ChildResult:
        """One Dagster run of the unit's days in a child process (as ``meterbook backfill``)
        that kills itself with SIGKILL at the crash point ``crash_at``."""
        self.activate()
        assert self.server is not None
        command = [
            sys.executable,
            "-m",
            "tests.reliability.crash_child",
            unit[0].isoformat(),
            unit[1].isoformat(),
            "--chunk-days",
            str(self.scale.days),
        ]
        settings = get_settings()
        crash = crashes.point(crash_at)
        environment = crashes.child_environment(
            {
                "METERBOOK_DATA_DIR": str(settings.data_dir),
                "METERBOOK_LEDGER_URL": self.ledger_url,
                "METERBOOK_WAREHOUSE_PATH": str(settings.warehouse_path),
                "METERBOOK_STRIPE_API_BASE": self.server.url,
                "METERBOOK_STRIPE_LOCAL_AUTOSTART": "0",
                **dict(crash.environment),
                crashes.CRASH_VARIABLE: crash.at,
            }
        )
        started = time.monotonic()
        result = crashes.run_child(command, environment)
        self.run_seconds.append(time.monotonic() - started)
        return result

    def dagster_runs_started(self) -> list[str]:
        """Runs of this pipeline's Dagster instance still marked started (a dead process's)."""
        self.activate()
        instance = prepare_instance(get_settings())
        return [run.run_id for run in instance.get_runs() if run.status.value == "STARTED"]


def write_raw_files(data_dir: Path, scale: RerunScale, seed: int = SEED) -> None:
    generate_sample_data(
        data_dir,
        start_date=FIRST_DAY,
        days=scale.days,
        customers=scale.customers,
        events_per_day=scale.events_per_day,
        seed=seed,
        price_book_dir=DBT_PROJECT_DIR / "seeds",
        mess=MESS,
    )


@contextmanager
def pipeline(
    name: str, data_dir: Path, ledger_url: str, scale: RerunScale, set_env: SetEnv
) -> Iterator[Pipeline]:
    """A pipeline over freshly generated raw files (the same for the same seed), served by its
    own local Stripe for the duration of the block."""
    data_dir.mkdir(parents=True, exist_ok=True)
    write_raw_files(data_dir, scale)
    with LocalStripeServer(
        db_path=data_dir / "stripe_local.sqlite3",
        now=scale.stripe_now,
        seed_customers_csv=data_dir / "raw" / "stripe" / "customers.csv",
    ) as server:
        yield Pipeline(name, data_dir, ledger_url, scale, set_env, server)


@dataclass(frozen=True)
class PassResult:
    units: list[Unit]
    failed_units: list[Unit]
    fingerprint: PipelineFingerprint
    seconds: float


def run_pass(target: Pipeline, units: list[Unit]) -> PassResult:
    started = time.monotonic()
    failed = [unit for unit in units if not target.run(unit).success]
    return PassResult(units, failed, target.fingerprint(), time.monotonic() - started)


@dataclass(frozen=True)
class Baseline:
    """A clean pipeline, run once (every day as one backfill) and stopped: what the re-run,
    crash and Stripe fault tests compare with. Its local Stripe's state stays in its file."""

    scale: RerunScale
    data_dir: Path
    ledger_url: str
    state: PipelineFingerprint
    seconds: float

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw"

    @property
    def warehouse_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"


def run_baseline(data_dir: Path, ledger_url: str, scale: RerunScale, set_env: SetEnv) -> Baseline:
    """Bill every day of ``scale`` once, as one backfill, in a fresh pipeline."""
    with pipeline("clean", data_dir, ledger_url, scale, set_env) as clean:
        started = time.monotonic()
        outcome = clean.run((FIRST_DAY, scale.last_day))
        seconds = time.monotonic() - started
        if not outcome.success:
            raise AssertionError(f"the clean run failed: {outcome}")
        state = clean.fingerprint()
    return Baseline(scale, data_dir, ledger_url, state, seconds)


def new_database(server_url: str, prefix: str) -> str:
    """An empty database on the server ``server_url`` (its ``postgres`` database's URL)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    return server_url.replace("/postgres?", f"/{name}?", 1)


def drop_database(server_url: str, database_url: str) -> None:
    name = database_url.split("/")[-1].split("?")[0]
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')

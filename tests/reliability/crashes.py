"""Crashes for the reliability harness: SIGKILL at named points, then the operator's re-run.

Each crash point (``crash_points.crash_point`` in the production code, armed by
``METERBOOK_CRASH_AT``) is tried in a scenario of its own: fresh warehouse, Dagster home, ledger
database and local Stripe, the same raw files. The pipeline runs as a child process
(``tests.reliability.crash_child``: ``run_days`` as ``meterbook backfill`` calls it, in its own
session) and kills itself at the point; it is then run again, in a fresh process, without the
variable, as a person re-running the failed command would. The end state must equal a clean
run's: the ledger's content hash, what Stripe's meters hold per customer, meter and day, the
outbox all sent once, no duplicate rows in the warehouse's natural-key tables, no Dagster run
left marked as started.

The local Stripe is the harness's (a thread of this process), as Stripe is nobody's process:
it survives every crash and keeps what it accepted.

Webhook points kill the real receiver (``meterbook stripe webhooks``) while it handles a
delivery; Stripe then redelivers what got no 2xx (here: the harness delivers again from that
event on), or the stored events are re-processed (``meterbook stripe webhooks --reprocess``).
The end state must equal an uninterrupted in-order delivery's (``webhook_storm.final_state``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import psycopg

from ledger import Ledger
from stripe_local.server import LocalStripeServer, free_port
from tests.reliability.pipeline_state import PipelineFingerprint, fingerprint

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CRASH_VARIABLE = "METERBOOK_CRASH_AT"
SCALE_VARIABLE = "METERBOOK_RELIABILITY_SCALE"
SEED = 20_261_010
# The pipeline's data: a few arrival days, billed in one or several Dagster runs.
FIRST_DAY = date(2026, 10, 1)
STRIPE_NOW = "2026-10-08T00:00:00Z"
RUN_TIMEOUT_SECONDS = 900


@dataclass(frozen=True)
class Scale:
    days: int
    customers: int
    events_per_day: int
    chunk_days: int  # days per Dagster run
    webhook_events: int

    @property
    def last_day(self) -> date:
        return FIRST_DAY + timedelta(days=self.days - 1)


SCALES = {
    "reduced": Scale(days=2, customers=3, events_per_day=150, chunk_days=31, webhook_events=60),
    "full": Scale(days=2, customers=4, events_per_day=300, chunk_days=31, webhook_events=300),
}


def crash_scale() -> str:
    scale = os.environ.get(SCALE_VARIABLE, "reduced").strip() or "reduced"
    if scale not in SCALES:
        raise ValueError(f"{SCALE_VARIABLE}={scale!r}: expected one of {', '.join(SCALES)}")
    return scale


@dataclass(frozen=True)
class CrashPoint:
    """Where the run is killed: ``at`` is the value of ``METERBOOK_CRASH_AT``."""

    at: str
    step: str  # the writing step or boundary it interrupts
    interrupts: str  # what is half done when it fires, in words
    environment: tuple[tuple[str, str], ...] = ()
    # True for the webhook receiver's points, False for the pipeline's.
    webhook: bool = False
    reprocess: bool = False  # killed in `meterbook stripe webhooks --reprocess`


PIPELINE_POINTS: tuple[CrashPoint, ...] = (
    CrashPoint(
        "ingestion.after_stripe_exports",
        "ingestion",
        "Stripe exports loaded, no usage ingested (first run, first asset)",
    ),
    CrashPoint(
        "ingestion.after_quarantine_write",
        "ingestion",
        "inside a day's DuckDB transaction: old rows deleted, quarantined lines written, "
        "accepted lines not yet",
    ),
    CrashPoint(
        "ingestion.before_day_commit",
        "ingestion",
        "inside a day's DuckDB transaction: every row written and deduplicated, not committed",
    ),
    CrashPoint(
        "ingestion.after_day_committed:2",
        "ingestion",
        "the second arrival day of the run committed, its materialisation not recorded",
    ),
    CrashPoint(
        "dbt.meterbook_dbt_models:3",
        "dbt",
        "dbt build running (3 results streamed: staging models and their tests); the "
        "process group killed, dbt with it",
    ),
    CrashPoint(
        "dbt.meterbook_dbt_models:25",
        "dbt",
        "dbt build running (25 results streamed: intermediate models, incremental "
        "int_usage_daily among them); the process group killed, dbt with it",
    ),
    CrashPoint(
        "dbt.meterbook_dbt_models:45",
        "dbt",
        "dbt build running (45 results streamed: the marts); the process group killed, dbt with it",
    ),
    CrashPoint(
        "dbt.meterbook_dbt_models.dagster_process_only:10",
        "dbt",
        "dbt build running (10 results streamed); only the Dagster process killed: dbt, "
        "orphaned, builds on alone and exits",
    ),
    CrashPoint(
        "ledger.after_batch_staged",
        "ledger posting",
        "the ledger batch planned and staged in the warehouse, nothing posted",
    ),
    CrashPoint(
        "ledger.mid_batch",
        "ledger posting",
        "inside the posting transaction: transactions copied, entries not (PostgreSQL "
        "rolls it back)",
    ),
    CrashPoint(
        "ledger.after_post_before_verify",
        "ledger posting",
        "the batch committed in PostgreSQL, its materialisation not recorded",
    ),
    CrashPoint(
        "stripe.after_meters_ensured",
        "Stripe sending",
        "Billing Meters created at Stripe, no intent recorded",
    ),
    CrashPoint(
        "stripe.after_intents_recorded",
        "Stripe sending",
        "the outbox's intents committed, nothing sent",
    ),
    # Before the stream's point: once a stream batch was accepted, Stripe refuses its
    # identifiers on v1 as duplicates (recorded as sent), so no v1 request succeeds after it.
    CrashPoint(
        "stripe.v1_after_request_before_outbox_update:3",
        "Stripe sending",
        "the third v1 meter event accepted by Stripe, no outcome recorded (v1, 8 lanes)",
        environment=(("METERBOOK_STRIPE_METER_EVENTS_API", "v1"),),
    ),
    CrashPoint(
        "stripe.after_request_before_outbox_update",
        "Stripe sending",
        "a meter event stream batch accepted by Stripe, the outbox not updated (v2 stream)",
    ),
    CrashPoint(
        "stripe.after_send",
        "Stripe sending",
        "every event sent and recorded, the asset's materialisation not recorded",
    ),
    CrashPoint(
        "finance.after_replica",
        "stage boundary",
        "the ledger replica copied into the warehouse, nothing downstream",
    ),
    CrashPoint(
        "ledger.replica_mid_copy",
        "ledger replication",
        "inside the replica's DuckDB transaction: transactions and entries inserted, accounts not",
    ),
    CrashPoint(
        "finance.after_meter_usage_read",
        "Stripe read-back",
        "meter event summaries read from Stripe, not stored",
    ),
    CrashPoint(
        "dbt.finance_dbt_models:4",
        "dbt",
        "the finance dbt build running (4 results streamed); the process group killed",
    ),
)

WEBHOOK_POINTS: tuple[CrashPoint, ...] = (
    CrashPoint(
        "webhooks.after_store_before_process:5",
        "webhook processing",
        "the receiver stored the 5th event, did not process it or answer (Stripe redelivers)",
        webhook=True,
    ),
    CrashPoint(
        "webhooks.mid_process:8",
        "webhook processing",
        "an invoice's ledger transactions posted, its dunning steps not recorded, no answer",
        webhook=True,
    ),
    CrashPoint(
        "webhooks.before_mark_processed:12",
        "webhook processing",
        "an object's events fully applied, not marked processed, no answer",
        webhook=True,
    ),
    CrashPoint(
        "webhooks.reprocess_after_object:6",
        "webhook processing",
        "`meterbook stripe webhooks --reprocess` over stored, unprocessed events killed after "
        "6 objects",
        webhook=True,
        reprocess=True,
    ),
)

ALL_POINTS = PIPELINE_POINTS + WEBHOOK_POINTS


def point(at: str) -> CrashPoint:
    return next(p for p in ALL_POINTS if p.at == at)


# Child processes ---------------------------------------------------------------------------


def child_environment(extra: dict[str, str]) -> dict[str, str]:
    """This environment without any crash point, the venv's scripts (dbt) first on PATH."""
    environment = {k: v for k, v in os.environ.items() if k != CRASH_VARIABLE}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    environment.update(
        {
            "TQDM_DISABLE": "1",
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            "GX_ANALYTICS_ENABLED": "false",
        }
    )
    environment.update(extra)
    return environment


@dataclass
class ChildResult:
    returncode: int
    seconds: float
    stdout: str
    stderr: str
    # Seconds the process group lived on after the child died (an orphaned dbt).
    orphan_seconds: float = 0.0
    timed_out: bool = False  # hung, and killed by the harness

    @property
    def killed(self) -> bool:
        """Killed by its crash point (not by the harness)."""
        return self.returncode == -signal.SIGKILL and not self.timed_out

    def tail(self) -> str:
        return (self.stderr or self.stdout)[-1500:]


def run_child(command: list[str], environment: dict[str, str]) -> ChildResult:
    """Run ``command`` in its own session (its own process group) and wait for the group: a
    killed parent can leave children (dbt) that still hold the warehouse."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    timed_out = False
    try:
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        timed_out = True  # a run that hangs (waiting for a lock, a pool slot)
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        stderr += f"\n(timed out after {RUN_TIMEOUT_SECONDS} s and killed by the harness)"
    died = time.perf_counter()
    wait_for_group(process.pid)
    return ChildResult(
        returncode=process.returncode,
        seconds=died - started,
        stdout=stdout,
        stderr=stderr,
        orphan_seconds=time.perf_counter() - died,
        timed_out=timed_out,
    )


def wait_for_group(group: int, timeout: float = RUN_TIMEOUT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            return
        if time.monotonic() > deadline:
            os.killpg(group, signal.SIGKILL)
            raise TimeoutError(f"process group {group} still alive after {timeout} s")
        time.sleep(0.1)


# The pipeline's scenarios -------------------------------------------------------------------


@dataclass(frozen=True)
class Workspace:
    """What every scenario shares: the raw files and one PostgreSQL server."""

    root: Path
    raw_dir: Path
    postgres_url: str
    scale: Scale

    def new_database(self) -> str:
        name = f"crash_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.postgres_url, autocommit=True) as conn:
            conn.execute(f'create database "{name}"')
        return self.postgres_url.replace("/postgres?", f"/{name}?", 1)


def make_workspace(root: Path, postgres_url: str, scale: Scale) -> Workspace:
    from ingestion.sample_data import generate_sample_data
    from orchestration.settings import DBT_PROJECT_DIR

    generate_sample_data(
        root / "sample",
        start_date=FIRST_DAY,
        days=scale.days,
        customers=scale.customers,
        events_per_day=scale.events_per_day,
        seed=SEED,
        price_book_dir=DBT_PROJECT_DIR / "seeds",
    )
    return Workspace(
        root=root, raw_dir=root / "sample" / "raw", postgres_url=postgres_url, scale=scale
    )


@dataclass
class Scenario:
    """One data directory, ledger database and local Stripe, run once or more."""

    workspace: Workspace
    name: str
    data_dir: Path
    ledger_url: str
    server: LocalStripeServer
    runs: list[ChildResult] = field(default_factory=list)

    def environment(self, extra: dict[str, str]) -> dict[str, str]:
        return child_environment(
            {
                "METERBOOK_DATA_DIR": str(self.data_dir),
                "METERBOOK_RAW_DIR": str(self.workspace.raw_dir),
                "METERBOOK_LEDGER_URL": self.ledger_url,
                "METERBOOK_STRIPE_API_BASE": self.server.url,
                "METERBOOK_STRIPE_LOCAL_AUTOSTART": "0",
                "METERBOOK_PARTITIONS_START": "2026-09-01",
                **extra,
            }
        )

    def run(self, extra: dict[str, str] | None = None) -> ChildResult:
        scale = self.workspace.scale
        command = [
            sys.executable,
            "-m",
            "tests.reliability.crash_child",
            FIRST_DAY.isoformat(),
            scale.last_day.isoformat(),
            "--chunk-days",
            str(scale.chunk_days),
        ]
        result = run_child(command, self.environment(extra or {}))
        self.runs.append(result)
        return result


@contextmanager
def scenario(workspace: Workspace, name: str) -> Iterator[Scenario]:
    data_dir = workspace.root / name
    data_dir.mkdir(parents=True)
    with LocalStripeServer(
        db_path=":memory:",
        now=STRIPE_NOW,
        seed_customers_csv=workspace.raw_dir / "stripe" / "customers.csv",
    ) as server:
        yield Scenario(
            workspace=workspace,
            name=name,
            data_dir=data_dir,
            ledger_url=workspace.new_database(),
            server=server,
        )


@dataclass(frozen=True)
class PipelineState:
    """What a finished pipeline leaves (``pipeline_state.fingerprint``: ledger, Stripe, outbox,
    duplicates, warehouse tables' content) and its line counts (raw, accepted, duplicate,
    quarantined)."""

    fingerprint: PipelineFingerprint
    lines: tuple[int, ...]


def pipeline_state(run: Scenario) -> PipelineState:
    from orchestration.settings import get_settings

    settings = replace(
        get_settings(),
        data_dir=run.data_dir,
        raw_dir=run.workspace.raw_dir,
        warehouse_path=run.data_dir / "warehouse.duckdb",
        ledger_url=run.ledger_url,
    )
    previous = os.environ.get("METERBOOK_LEDGER_URL")
    os.environ["METERBOOK_LEDGER_URL"] = run.ledger_url  # what fingerprint() connects to
    try:
        found = fingerprint(settings, run.server)
    finally:
        if previous is None:
            os.environ.pop("METERBOOK_LEDGER_URL", None)
        else:
            os.environ["METERBOOK_LEDGER_URL"] = previous
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        lines = conn.execute(
            "select sum(raw_lines), sum(accepted_lines), sum(duplicate_lines), "
            "sum(quarantined_lines) from ingest.usage_file_counts"
        ).fetchone()
    return PipelineState(fingerprint=found, lines=tuple(int(n or 0) for n in lines or ()))


def derived_state(run: Scenario, ledger_url: str) -> PipelineState:
    """What a clean run must leave, derived without one (the reduced form saves that run): the
    line counts the sample data's manifest promises; the ledger a single clean run posts for
    the rated slots and the invoices' fee lines (each a first revision, posted into the empty
    database ``ledger_url`` for its content hash); Stripe's meters and the outbox holding each
    rated quantity once, sent. Slots and fee lines are the scenario's own; its ingestion is
    checked by the counts."""
    from ledger.fee_postings import plan_fee_postings
    from ledger.usage_accruals import RatedSlot, plan_usage_accruals
    from orchestration.assets.billing import fee_lines
    from stripe_sync.meter_events import meter_event_identifier

    actual = pipeline_state(run)
    totals = json.loads((run.workspace.raw_dir / "sample_manifest.json").read_text())["totals"]
    with duckdb.connect(str(run.data_dir / "warehouse.duckdb"), read_only=True) as conn:
        priced = conn.execute(
            "select customer_id, meter_id, usage_date, currency, amount_minor_exact, "
            "quantity_units from billable_usage_daily where is_priced"
        ).fetchall()
        fees, invoiced_periods = fee_lines(conn)
    transactions = plan_usage_accruals(
        [
            RatedSlot(customer_id=c, meter_id=m, usage_date=d, currency=cur, amount_minor=a)
            for c, m, d, cur, a, _ in priced
        ],
        posted={},
        usage_dates={row[2] for row in priced},
    ) + plan_fee_postings(fees, posted={}, periods=invoiced_periods)
    with Ledger.connect(ledger_url) as book:
        book.post_many(transactions)
        report = book.verify(recompute_hashes=True)
    used = sorted((c, m, d.isoformat(), int(q)) for c, m, d, _, _, q in priced if int(q) > 0)
    expected = replace(
        actual.fingerprint,
        ledger_content_hash=report.content_hash,
        ledger_transactions=report.transactions,
        stripe_usage=tuple(used),
        outbox=tuple(
            sorted(
                (meter_event_identifier(f"{c}:{m}:{d}", 1), f"{c}:{m}:{d}", 1, q, "sent")
                for c, m, d, q in used
            )
        ),
    )
    lines = (
        totals["raw_lines"],
        totals["expected_accepted"],
        totals["expected_duplicates"],
        totals["expected_quarantined"],
    )
    return PipelineState(fingerprint=expected, lines=lines)


def state_differences(expected: PipelineState, actual: PipelineState) -> list[str]:
    """What ``actual`` has other than ``expected``, and what is wrong in it alone."""
    found = expected.fingerprint.differences(actual.fingerprint, limit=3)
    if expected.lines != actual.lines:
        found.append(
            f"lines (raw, accepted, duplicate, quarantined): {expected.lines} vs {actual.lines}"
        )
    return found + [p for p in actual.fingerprint.problems() if p not in found]


def expected_problems(clean: PipelineState) -> list[str]:
    """What a clean run itself must satisfy before it can stand for the truth."""
    problems = clean.fingerprint.problems()
    if not clean.fingerprint.stripe_usage or not clean.fingerprint.ledger_transactions:
        problems.append("the clean run billed nothing")
    return problems


def dagster_runs(run: Scenario) -> list[tuple[str, str]]:
    """(run id, status) of every run in the scenario's Dagster instance."""
    import dagster as dg

    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(run.data_dir / "dagster")
    try:
        with dg.DagsterInstance.get() as instance:
            return [(r.run_id, r.status.value) for r in instance.get_runs()]
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = previous


@dataclass
class Outcome:
    point: CrashPoint
    problems: list[str]
    crash_seconds: float = 0.0
    rerun_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


def interim_problems(run: Scenario) -> list[str]:
    """What must hold right after any crash: the ledger's invariants, nothing twice at Stripe."""
    return crash_invariant_problems(run.ledger_url, run.server)


def crash_invariant_problems(ledger_url: str, server: LocalStripeServer) -> list[str]:
    """The ledger's invariants and no meter event identifier twice at Stripe, in any state."""
    problems = []
    try:
        with Ledger.connect(ledger_url) as book:
            problems += book.verify(recompute_hashes=True).problems()
    except psycopg.Error as error:
        problems.append(f"the ledger cannot be read: {error}")
    identifiers = Counter(e["identifier"] for e in server.store.meter_events())
    twice = sorted(i for i, n in identifiers.items() if n > 1)
    if twice:
        problems.append(f"meter event identifiers twice at Stripe: {twice[:3]}")
    return problems


def crash_chain(
    workspace: Workspace, points: list[CrashPoint], clean: PipelineState | None, name: str
) -> list[Outcome]:
    """In one scenario, kill a run at each point in turn (each run being the re-run of the
    previous crash), then run once more without a crash point and compare with ``clean``.

    Points are given in the order the pipeline reaches them, so each run gets at least as far
    as the one before. Each point's own result: was it reached (SIGKILL), did the ledger's
    invariants hold and Stripe hold no identifier twice right after it; the chain's end state
    is every point's result too.
    """
    outcomes = []
    with scenario(workspace, name) as run:
        for crash in points:
            outcome = Outcome(point=crash, problems=[])
            outcomes.append(outcome)
            crashed = run.run({**dict(crash.environment), CRASH_VARIABLE: crash.at})
            outcome.crash_seconds = crashed.seconds
            if not crashed.killed:
                outcome.problems.append(
                    f"not reached (exit {crashed.returncode}): {crashed.tail()[-600:]}"
                )
                continue
            if crashed.orphan_seconds > 5:  # dbt, left running by a killed Dagster process
                outcome.notes.append(
                    f"the run's child processes lived {crashed.orphan_seconds:.0f} s after it"
                )
            outcome.problems += interim_problems(run)
        final = run.run()
        for outcome in outcomes:
            outcome.rerun_seconds = final.seconds
        if final.returncode != 0:
            for outcome in outcomes:
                outcome.problems.append(
                    f"the final re-run failed (exit {final.returncode}): {final.tail()[-600:]}"
                )
            return outcomes
        expected = clean or derived_state(run, workspace.new_database())
        differences = state_differences(expected, pipeline_state(run))
        started = [run_id for run_id, status in dagster_runs(run) if status == "STARTED"]
        if started:
            differences.append(f"Dagster runs still marked STARTED: {started}")
        for outcome in outcomes:
            outcome.problems += differences
    return outcomes


def clean_state(workspace: Workspace) -> tuple[PipelineState, float, list[str]]:
    """A clean run's state and duration, and how the reduced form's derived expectation
    (``derived_state``) differs from it (it must not)."""
    with scenario(workspace, "clean") as run:
        result = run.run()
        if result.returncode != 0:
            raise AssertionError(f"the clean run failed: {result.tail()}")
        state = pipeline_state(run)
        derived = derived_state(run, workspace.new_database())
        return state, result.seconds, state_differences(derived, state)


def describe(outcome: Outcome) -> str:
    verdict = "pass" if outcome.passed else "FAIL: " + "; ".join(outcome.problems)
    return f"{outcome.point.at}: {verdict}"


__all__ = [
    "ALL_POINTS",
    "PIPELINE_POINTS",
    "WEBHOOK_POINTS",
    "CrashPoint",
    "Outcome",
    "clean_state",
    "crash_chain",
    "free_port",
    "make_workspace",
    "point",
]


# The webhook receiver's scenarios -----------------------------------------------------------


def webhook_clean_state(storm: Any, ledger_url: str) -> dict[str, Any]:
    """The storm delivered once, in order, to an uninterrupted receiver."""
    from tests.reliability import webhook_storm as storm_kit

    result = storm_kit.run_plan(ledger_url, storm_kit.in_order(storm), seed=SEED)
    if result.not_processed or set(result.statuses.get("genuine", {})) != {200}:
        raise AssertionError(f"the clean delivery failed: {result.statuses}")
    return storm_kit.final_state(ledger_url, storm.invoice_ids())


@contextmanager
def receiver(ledger_url: str, extra: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen]]:
    """``meterbook stripe webhooks`` in a child process; yields its URL and the process."""
    from tests.reliability.webhook_storm import SECRET

    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "meterbook"), "stripe", "webhooks", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=child_environment(
            {"METERBOOK_LEDGER_URL": ledger_url, "STRIPE_WEBHOOK_SECRET": SECRET, **extra}
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    from stripe_local.server import accepts_connections

    deadline = time.monotonic() + 120
    while not accepts_connections(port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the receiver did not start: {process.communicate()[1][-1500:]}")
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}/stripe/webhooks", process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=30)


def deliver(url: str, deliveries: list[Any]) -> int | None:
    """POST each delivery in turn, signed now; returns the index of the first that got no
    answer (the receiver died), or None when all were answered 200."""
    import random
    import urllib.error
    import urllib.request

    from tests.reliability.webhook_storm import request_of

    rng = random.Random(SEED)
    for index, delivery in enumerate(deliveries):
        body, headers = request_of(delivery, rng)
        request = urllib.request.Request(url, data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                if response.status != 200:
                    raise AssertionError(f"delivery {index} answered {response.status}")
        except urllib.error.HTTPError as error:
            raise AssertionError(f"delivery {index} answered {error.code}") from error
        except OSError:
            return index
    return None


def webhook_crash_and_redeliver(
    storm: Any, ledger_url: str, crash: CrashPoint, clean: dict[str, Any]
) -> Outcome:
    """Kill the receiver at ``crash``; Stripe redelivers every event that got no 2xx (the one
    in flight, then the rest), to a receiver started again. Or, for ``--reprocess``: every event
    stored unprocessed, the re-processing killed, then run again."""
    from stripe_sync import webhooks
    from tests.reliability import webhook_storm as storm_kit

    outcome = Outcome(point=crash, problems=[])
    Ledger.connect(ledger_url).close()
    plan = storm_kit.in_order(storm)
    started = time.perf_counter()
    if crash.reprocess:
        with psycopg.connect(ledger_url, autocommit=True) as conn:
            webhooks.ensure_schema(conn)
            for delivery in plan:  # as a receiver whose processing failed leaves them
                webhooks.store_event(conn, delivery.event)
        command = [str(Path(sys.executable).parent / "meterbook"), "stripe", "webhooks"]
        environment = child_environment({"METERBOOK_LEDGER_URL": ledger_url})
        crashed = run_child([*command, "--reprocess"], {**environment, CRASH_VARIABLE: crash.at})
        outcome.crash_seconds = crashed.seconds
        if not crashed.killed:
            outcome.problems.append(f"the crash point was not reached: {crashed.tail()}")
            return outcome
        again = run_child([*command, "--reprocess"], environment)
        outcome.rerun_seconds = again.seconds
        if again.returncode != 0:
            outcome.problems.append(f"re-processing failed: {again.tail()}")
            return outcome
    else:
        with receiver(ledger_url, {CRASH_VARIABLE: crash.at}) as (url, process):
            failed_at = deliver(url, plan)
            process.wait(timeout=60)
            if failed_at is None or process.returncode != -signal.SIGKILL:
                outcome.problems.append(
                    f"the crash point was not reached (receiver exit {process.returncode})"
                )
                return outcome
        outcome.crash_seconds = time.perf_counter() - started
        outcome.notes.append(f"killed at delivery {failed_at + 1} of {len(plan)}")
        redelivered = time.perf_counter()
        with receiver(ledger_url, {}) as (url, _):
            if deliver(url, plan[failed_at:]) is not None:
                outcome.problems.append("the restarted receiver stopped answering")
                return outcome
        outcome.rerun_seconds = time.perf_counter() - redelivered
    outcome.problems += storm_kit.differences(
        clean, storm_kit.final_state(ledger_url, storm.invoice_ids())
    )
    return outcome

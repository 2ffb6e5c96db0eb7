"""The re-runs part of the reliability harness in its full form; writes the figures into the
"## Re-runs" section of docs/reliability.md (and its row in the list of parts).

    uv run --frozen python bench/reliability_reruns.py                    # 7 days, 5 passes
    uv run --frozen python bench/reliability_reruns.py --scale reduced --no-write

Two pipelines over the same generated raw files, each with its own warehouse, ledger database
(one embedded PostgreSQL) and local Stripe (``tests/reliability/reruns.py``):

- *clean, then re-runs*: the days billed once as one backfill (the clean run), then every day
  ``passes - 1`` more times in shuffled, overlapping ranges; after each pass everything the
  pipeline left (``tests/reliability/pipeline_state.py``) must equal the clean run's, ledger
  content hash included;
- *out of order from scratch*: every day once in shuffled units (usage billed before the day it
  occurred on), then once more in overlapping ranges; the first pass must hold what the clean
  run holds in every respect that does not record arrival order, the second must change nothing.

Exit status 1 when a check fails (the section is written all the same, saying so).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import psycopg  # noqa: E402
from doc_sections import replace_section  # noqa: E402

from ledger import embedded_ledger_url  # noqa: E402
from orchestration.settings import get_settings  # noqa: E402
from tests.reliability import reruns  # noqa: E402
from tests.reliability.pipeline_state import (  # noqa: E402
    LEDGER_NATURAL_KEYS,
    ORDER_DEPENDENT,
    STRIPE_NATURAL_KEYS,
    WAREHOUSE_CONTENT,
    WAREHOUSE_NATURAL_KEYS,
    PipelineFingerprint,
    describe_differences,
)
from tests.reliability.stripe_fault_rates import rated_quantities  # noqa: E402

DOC = PROJECT_ROOT / "docs" / "reliability.md"
SECTION = "## Re-runs"
COMMAND = "uv run --frozen python bench/reliability_reruns.py"
STATUS_ROW_START = "| Re-runs |"
OUT_OF_ORDER_SEED = reruns.SEED + 1
NATURAL_KEYS = len(WAREHOUSE_NATURAL_KEYS) + len(LEDGER_NATURAL_KEYS) + len(STRIPE_NATURAL_KEYS)
CHECKED_STRICT = (
    "everything = the clean run: ledger content hash and verdict, ledger totals per slot, "
    "Stripe usage per customer, meter and day, meter events accepted, outbox writes, "
    f"{len(WAREHOUSE_CONTENT)} warehouse tables; 0 duplicates in {NATURAL_KEYS} natural keys"
)


@dataclass(frozen=True)
class Row:
    test: str
    injected: str
    how_many: str
    checked: str
    problems: list[str]
    seconds: float

    def cells(self) -> list[str]:
        result = "pass" if not self.problems else "FAIL: " + _one_line(self.problems)
        return [
            self.test,
            self.injected,
            self.how_many,
            self.checked,
            result,
            f"{self.seconds:,.0f} s",
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", choices=sorted(reruns.SCALES), default="full")
    parser.add_argument("--no-write", action="store_true", help="print, leave the docs alone")
    parser.add_argument("--doc", type=Path, default=DOC, help="the file whose section to write")
    args = parser.parse_args()
    scale = reruns.SCALES[args.scale]
    started = time.monotonic()

    work_dir = Path(tempfile.mkdtemp(prefix="mbrr"))
    server_url = embedded_ledger_url(work_dir / "pg")
    whole_range = (reruns.FIRST_DAY, scale.last_day)
    rows: list[Row] = []

    later_passes = reruns.plan_passes(scale)[1:]
    with reruns.pipeline(
        "clean", work_dir / "clean", _new_database(server_url), scale, os.environ.__setitem__
    ) as clean:
        run_started = time.monotonic()
        outcome = clean.run(whole_range)
        clean_state = clean.fingerprint()
        problems = [] if outcome.success else ["the run failed"]
        problems += clean_state.problems()
        rows.append(
            Row(
                test="clean run",
                injected="nothing: every day once, as one backfill",
                how_many=f"1 run of {scale.days} days",
                checked="ledger verifies; outbox all sent, none dead; Stripe usage = rating; "
                f"0 duplicates in {NATURAL_KEYS} natural keys",
                problems=problems + _stripe_vs_rating(clean_state, clean),
                seconds=time.monotonic() - run_started,
            )
        )
        _progress(rows[-1])
        for number, units in enumerate(later_passes, start=2):
            result = reruns.run_pass(clean, units)
            problems = [f"runs failed: {result.failed_units}"] if result.failed_units else []
            if result.fingerprint != clean_state:
                problems.append(describe_differences(clean_state, result.fingerprint))
            rows.append(
                Row(
                    test=f"re-run pass {number}",
                    injected="every day again, in shuffled overlapping ranges: "
                    + ", ".join(map(reruns.describe_unit, units)),
                    how_many=f"{len(units)} runs",
                    checked=CHECKED_STRICT,
                    problems=problems,
                    seconds=result.seconds,
                )
            )
            _progress(rows[-1])
    clean_runs = clean.runs

    out_of_order = reruns.plan_passes(scale, seed=OUT_OF_ORDER_SEED)[:2]
    with reruns.pipeline(
        "out of order",
        work_dir / "out_of_order",
        _new_database(server_url),
        scale,
        os.environ.__setitem__,
    ) as shuffled:
        first = reruns.run_pass(shuffled, out_of_order[0])
        problems = [f"runs failed: {first.failed_units}"] if first.failed_units else []
        problems += first.fingerprint.problems()
        if first.fingerprint.order_independent() != clean_state.order_independent():
            problems.append(
                describe_differences(clean_state, first.fingerprint, ignore=ORDER_DEPENDENT)
            )
        same_hash = first.fingerprint.ledger_content_hash == clean_state.ledger_content_hash
        rows.append(
            Row(
                test="out of order from scratch",
                injected="every day once, in shuffled units (usage billed before its own day): "
                + ", ".join(map(reruns.describe_unit, out_of_order[0])),
                how_many=f"{len(out_of_order[0])} runs",
                checked="ledger verifies; outbox all sent; = the clean run in ledger totals per "
                "slot, Stripe usage per customer, meter and day and "
                f"{len(WAREHOUSE_CONTENT)} warehouse tables; 0 duplicates in {NATURAL_KEYS} "
                "natural keys; ledger content hash "
                + ("= the clean run's" if same_hash else "other than the clean run's (expected)")
                + f": {first.fingerprint.ledger_transactions:,} transactions and "
                f"{first.fingerprint.meter_events_accepted:,} meter events against "
                f"{clean_state.ledger_transactions:,} and {clean_state.meter_events_accepted:,}",
                problems=problems,
                seconds=first.seconds,
            )
        )
        _progress(rows[-1])
        second = reruns.run_pass(shuffled, out_of_order[1])
        problems = [f"runs failed: {second.failed_units}"] if second.failed_units else []
        if second.fingerprint != first.fingerprint:
            problems.append(describe_differences(first.fingerprint, second.fingerprint))
        rows.append(
            Row(
                test="out of order, re-run",
                injected="every day again, in shuffled overlapping ranges: "
                + ", ".join(map(reruns.describe_unit, out_of_order[1])),
                how_many=f"{len(out_of_order[1])} runs",
                checked="everything = after the first pass, ledger content hash included",
                problems=problems,
                seconds=second.seconds,
            )
        )
        _progress(rows[-1])

    section = _section(
        scale,
        args.scale,
        rows,
        clean_state,
        runs_per_day=reruns.runs_per_day([[whole_range], *later_passes]),
        runs=len(clean_runs) + len(shuffled.runs),
        seconds=time.monotonic() - started,
    )
    if args.no_write:
        print(section)
    else:
        replace_section(args.doc, SECTION, section, empty_text="# Reliability\n")
        passed = not any(row.problems for row in rows)
        replace_status_row(
            args.doc,
            STATUS_ROW_START,
            f"| Re-runs | {'built' if passed else 'built, failing'} | section *Re-runs*: "
            f"`{COMMAND}` |",
        )
        print(f"wrote the {SECTION!r} section of {args.doc}")
    if any(row.problems for row in rows):
        sys.exit(1)


def replace_status_row(path: Path, row_start: str, row: str) -> None:
    """Replace the line of the list of harness parts that starts with ``row_start``."""
    lines = path.read_text().splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.startswith(row_start):
            lines[index] = row + "\n"
            break
    path.write_text("".join(lines))


def _stripe_vs_rating(state: PipelineFingerprint, target: reruns.Pipeline) -> list[str]:
    target.activate()
    rated = rated_quantities(get_settings().warehouse_path)
    metered = {(c, m, d): q for c, m, d, q in state.stripe_usage}
    return [] if rated == metered else ["Stripe usage differs from the rating"]


def _one_line(problems: list[str]) -> str:
    """Problems fit for a table cell: one line, no pipes, at most 400 characters."""
    return "; ".join(problems).replace("\n", "; ").replace("|", "/")[:400]


def _new_database(server_url: str) -> str:
    name = f"reruns_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    return server_url.replace("/postgres?", f"/{name}?", 1)


def _progress(row: Row) -> None:
    result = "pass" if not row.problems else f"FAIL {row.problems}"
    print(f"{row.test}: {row.how_many} in {row.seconds:.0f} s: {result}", flush=True)


# What this harness found, kept with its section (the section is rewritten on every run).
FOUND_AND_FIXED = [
    "Found by this harness and fixed (commit 6970c58): `orchestration/assets/dbt.py` set "
    '`os.environ["METERBOOK_WAREHOUSE_PATH"]` to the warehouse it built and never restored it, '
    "and `get_settings()` prefers that variable to the data directory's warehouse, so a process "
    "that billed a second data directory (a test, this harness) silently kept using the first "
    "one's warehouse: in the run of 2026-11-30 the out-of-order pipeline rated from the clean "
    "run's warehouse, so its ledger came out identical to the clean run's. The dbt step now hands "
    "the path to dbt's process only (`tests/pipeline/test_end_to_end.py::"
    "test_a_day_without_files_runs_clean_on_a_new_warehouse` asserts it), and the harness names "
    "each pipeline's warehouse itself.",
    "",
    "Found by this harness and fixed: days run out of order left Stripe with more usage than was "
    "rated for a slot. Copies of an `event_id` are resolved over every day ingested, the copy "
    "received first winning (`ingestion/usage_events.py`), and `stripe_meter_events` sent each "
    "touched slot's rated quantity as soon as its run rated it. Run day 2 before day 1 and a "
    "conflicting copy in day 2's files was accepted for now, rated and sent; when day 1 ran, its "
    "own copy won and the rating and the ledger went down (the ledger by a revision), but a "
    "meter event cannot be lowered, so Stripe kept the excess. Stripe's own correction (a meter "
    "event adjustment cancelling an event by identifier) is accepted only within 24 hours and "
    "confirmed asynchronously, so it cannot make a late backfill exact. Instead the Stripe step "
    "holds a slot back while an arrival day that could still lower it has raw files not "
    "ingested (`orchestration/stripe_holds.py`: for a slot of usage date U whose accepted usage "
    "arrived up to day A, the days U-1 to A), records it in `stripe_sync.held_meter_slots`, says "
    "so in the run's log and metadata and in the `stripe_outbox_clear` check, and plans it again "
    "in every later run until its days ran. Not covered (a decrease is still reported and "
    "reconciled as `extra_usage`): a conflicting copy with another `occurred_at` received days "
    "earlier, one received in the 6 hours before its file's day, and a file that changes after "
    "its day ran. Regression tests: `tests/reliability/test_out_of_order_days.py` and "
    "`tests/reliability/test_reruns.py` (the whole pipeline, day 2 before day 1: Stripe = the "
    "clean run, outbox and meter events included).",
    "",
]


def _section(
    scale: reruns.RerunScale,
    scale_name: str,
    rows: list[Row],
    clean_state: PipelineFingerprint,
    *,
    runs_per_day: dict,
    runs: int,
    seconds: float,
) -> str:
    header = ["test", "injected", "how many", "checked", "result", "duration"]
    times = sorted(set(runs_per_day.values()))
    passed = sum(1 for row in rows if not row.problems)
    lines = [
        SECTION,
        "",
        f"Produced by `{COMMAND}` (the full form of `tests/reliability/test_reruns.py`; CI runs "
        "that test reduced: two days, day 2 before day 1 (the day-1 run killed after Stripe "
        "accepted a batch), then both again as one backfill, against the clean run the harness "
        "shares: `CI=true uv run --frozen pytest -m reliability tests/reliability`).",
        "",
        f"Last run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, scale {scale_name}: "
        f"{scale.days} days from {reruns.FIRST_DAY.isoformat()} ({scale.customers} customers, "
        f"{scale.events_per_day} events a day, sample-data seed {reruns.SEED}, order seeds "
        f"{reruns.SEED} and {OUT_OF_ORDER_SEED}), {runs} Dagster runs in {seconds / 60:.0f} min. "
        f"In the first pipeline every day ran {', '.join(map(str, times))} times. "
        f"**{passed} of {len(rows)} rows pass.** The clean run left "
        f"{clean_state.ledger_transactions:,} ledger transactions, "
        f"{clean_state.meter_events_accepted:,} meter events for "
        f"{len(clean_state.stripe_usage):,} customer-meter-day slots.",
        "",
        "Not the demo month: a Dagster run has a fixed cost (two dbt invocations, a quality "
        "gate's Great Expectations import; 10-60 s here), so 30 days run 5 times one day at a "
        "time would take hours; a shorter period keeps every shape (single days, ranges, "
        "overlaps, days out of order) in a quarter of an hour.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row.cells()) + " |" for row in rows),
        "",
        "Each pass is a list of Dagster runs (`orchestration.runner.run_days`: a range is one "
        "run, the assets' single-run backfill policy), in the order shown. Natural keys checked "
        "for duplicates: in the warehouse, "
        + "; ".join(key.name for key in WAREHOUSE_NATURAL_KEYS)
        + "; in PostgreSQL, "
        + "; ".join(key.name for key in LEDGER_NATURAL_KEYS)
        + "; on the local Stripe, meter events by identifier. Warehouse tables compared: "
        + ", ".join(table for table, _ in WAREHOUSE_CONTENT)
        + " (columns that record when something ran, and revision counts, left out).",
        "",
        "Why the ledger content hash of a pipeline that first ran days out of order is not the "
        "clean run's: the ledger posts, per customer-meter-day slot, only the difference "
        "between the rated amount and what it holds, as revisions `r1, r2, …`. Run day 2 "
        "first and the late usage it carries for day 1 is posted as day 1's `r1`; day 1's "
        "own usage follows as `r2`. Same totals per slot and account, other transactions. "
        "Re-runs after that change nothing. For the same reason it sends more meter events: "
        "a slot's usage reaches Stripe as one change per run that moved it (an increase, or a "
        "decrease when a `unique_count` value turns out first seen on a day billed later); "
        "what Stripe counts per slot is the clean run's, and a slot whose changes net to zero "
        "counts as none, at Stripe and in the outbox's totals, as a ledger slot that nets to "
        "zero does.",
        "",
        *FOUND_AND_FIXED,
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

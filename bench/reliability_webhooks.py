"""The webhook part of the reliability harness in its full form; writes the figures into the
"## Webhooks" section of docs/reliability.md.

    uv run --frozen python bench/reliability_webhooks.py                 # 10,000 events
    uv run --frozen python bench/reliability_webhooks.py --events 500 --no-write

On a fresh embedded PostgreSQL, the storm of ``tests/reliability/webhook_storm.py`` (the local
Stripe's billing of many customers over six periods, with subscription changes, late payments,
refunds, disputes and meter error reports) is delivered to the real receiver three times, each
into its own database, with the checks of ``tests/reliability/test_webhook_storm.py``: in order;
in random order with each event 1-3 times; in random order interleaved with bad signatures, stale
timestamps, altered bodies and forged events. Exit status 1 when a check fails (the section is
written all the same, saying so).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import psycopg  # noqa: E402
from doc_sections import replace_section  # noqa: E402

from ledger import embedded_ledger_url  # noqa: E402
from tests.reliability import webhook_storm as storm_kit  # noqa: E402
from tests.reliability.test_webhook_storm import (  # noqa: E402
    BAD_DELIVERY_SEED,
    SHUFFLE_SEED,
    SIGNING_SEED,
)

DOC = PROJECT_ROOT / "docs" / "reliability.md"
SECTION = "## Webhooks"
COMMAND = "uv run --frozen python bench/reliability_webhooks.py"
CHECKED_AGAINST_IN_ORDER = (
    "final state = in order (ledger content hash, balances, transactions per kind, dunning "
    "steps and each invoice's dunning state, subscriptions, disputes, stored events); "
    "as many transactions; each event stored once, its deliveries counted"
)
BAD_KIND_NAMES = {
    "wrong_secret": "wrong secret",
    "stale_timestamp": "stale timestamp (a replayed capture, 6 min to 3 days old)",
    "altered_body": "body altered after signing",
    "no_signature": "no signature",
    "malformed_signature": "malformed signature header",
    "forged_event": "forged event (new id, wrong secret)",
}


@dataclass(frozen=True)
class Row:
    test: str
    injected: str
    how_many: str
    checked: str
    problems: list[str]
    seconds: float
    deliveries: int

    def cells(self) -> list[str]:
        result = "pass" if not self.problems else "FAIL: " + "; ".join(self.problems)[:300]
        rate = self.deliveries / self.seconds if self.seconds else 0.0
        return [
            self.test,
            self.injected,
            self.how_many,
            self.checked,
            result,
            f"{self.seconds:,.0f} s",
            f"{rate:,.0f}",
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=storm_kit.EVENTS_BY_SCALE["full"])
    parser.add_argument("--seed", type=int, default=storm_kit.SEED)
    parser.add_argument("--no-write", action="store_true", help="print, leave the docs alone")
    parser.add_argument("--doc", type=Path, default=DOC, help="the file whose section to write")
    args = parser.parse_args()

    server_url = embedded_ledger_url(Path(tempfile.mkdtemp(prefix="mbrel")))
    started = time.perf_counter()
    storm = storm_kit.generate_storm(events=args.events, seed=args.seed)
    generated_seconds = time.perf_counter() - started
    print(f"storm: {len(storm.events):,} events in {generated_seconds:.0f} s", flush=True)
    invoice_ids = storm.invoice_ids()
    rows = []

    def run(plan: list[storm_kit.Delivery]) -> tuple[storm_kit.RunResult, dict, dict[str, int]]:
        url = _new_database(server_url)
        result = storm_kit.run_plan(url, plan, seed=SIGNING_SEED)
        return result, storm_kit.final_state(url, invoice_ids), storm_kit.stored_deliveries(url)

    plan = storm_kit.in_order(storm)
    result, baseline, deliveries = run(plan)
    rows.append(
        Row(
            test="in order",
            injected="nothing: every event once, in the order Stripe created them",
            how_many=f"{len(plan):,} deliveries",
            checked="all 200 and processed; ledger invariants; transactions per kind = what the "
            "events call for, counted from the events; each event stored once",
            problems=storm_kit.in_order_problems(storm, result, baseline, deliveries),
            seconds=result.seconds,
            deliveries=len(plan),
        )
    )
    _progress(rows[-1])

    plan = storm_kit.shuffled_with_replays(storm, seed=SHUFFLE_SEED)
    copies = Counter(storm_kit.genuine_copies(plan).values())
    result, state, deliveries = run(plan)
    rows.append(
        Row(
            test="random order, replays",
            injected=f"each event 1-3 times ({copies[1]:,} once, {copies[2]:,} twice, "
            f"{copies[3]:,} three times), all deliveries shuffled (seed {SHUFFLE_SEED})",
            how_many=f"{len(plan):,} deliveries ({len(plan) - len(storm.events):,} replays)",
            checked="all 200 and processed; " + CHECKED_AGAINST_IN_ORDER,
            problems=storm_kit.replay_problems(baseline, plan, result, state, deliveries),
            seconds=result.seconds,
            deliveries=len(plan),
        )
    )
    _progress(rows[-1])

    plan = storm_kit.with_bad_deliveries(storm, seed=BAD_DELIVERY_SEED)
    bad = Counter(d.kind for d in plan if d.bad)
    result, state, deliveries = run(plan)
    rows.append(
        Row(
            test="bad signatures, stale timestamps, forgeries",
            injected=", ".join(
                f"{BAD_KIND_NAMES[kind]} {bad[kind]:,}" for kind in storm_kit.BAD_KINDS
            )
            + f"; among every event once, shuffled (seed {BAD_DELIVERY_SEED})",
            how_many=f"{len(plan):,} deliveries ({bad.total():,} bad)",
            checked="every bad delivery refused with 400, none stored or counted; genuine "
            "ones 200 and processed; " + CHECKED_AGAINST_IN_ORDER,
            problems=storm_kit.replay_problems(baseline, plan, result, state, deliveries),
            seconds=result.seconds,
            deliveries=len(plan),
        )
    )
    _progress(rows[-1])

    section = _section(storm, generated_seconds, rows, baseline)
    if args.no_write:
        print(section)
    else:
        _write_section(args.doc, section)
        print(f"wrote the {SECTION!r} section of {args.doc}")
    if any(row.problems for row in rows):
        sys.exit(1)


def _new_database(server_url: str) -> str:
    name = f"storm_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    return storm_kit.without_waiting_for_the_disk(server_url.replace("/postgres?", f"/{name}?", 1))


def _progress(row: Row) -> None:
    result = "pass" if not row.problems else f"FAIL {row.problems}"
    print(f"{row.test}: {row.how_many} in {row.seconds:.0f} s: {result}", flush=True)


def _section(
    storm: storm_kit.Storm, generated_seconds: float, rows: list[Row], baseline: dict
) -> str:
    types = ", ".join(f"{event_type} {count:,}" for event_type, count in storm.types().items())
    kinds = ", ".join(f"{k} {v:,}" for k, v in baseline["transactions_by_kind"].items())
    header = ["test", "injected", "how many", "checked", "result", "duration", "events/s"]
    lines = [
        SECTION,
        "",
        f"Produced by `{COMMAND}` (the full form of `tests/reliability/test_webhook_storm.py`; "
        "CI runs that test reduced, 500 events: "
        "`uv run --frozen pytest -m reliability tests/reliability/test_webhook_storm.py`).",
        "",
        f"Last run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: a storm of {len(storm.events):,} "
        f"Stripe events (seed {storm.seed}, generated in {generated_seconds:.0f} s): {types}. "
        "Invoice events come from the local Stripe's billing (`/_local/bill`, captured through "
        "`/_local/webhooks/flush`); subscription changes, late payments, authentication "
        "requests, voided invoices, refunds, disputes and meter error reports are built around "
        "them. Each run delivers to the real receiver "
        "(uvicorn on 127.0.0.1, signed as Stripe signs) into a fresh database of an embedded "
        "PostgreSQL whose commits do not wait for the disk (`synchronous_commit = off`, as in "
        "the test: crashes are not injected here). The in-order run posts "
        f"{baseline['transactions']:,} ledger transactions ({kinds}) and "
        f"{len(baseline['dunning_events']):,} dunning steps.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row.cells()) + " |" for row in rows),
        "",
        "Duration is the delivery time of the run (HTTP, verification, storage and processing, "
        "one request at a time); events/s counts every delivery, replays and refused ones "
        "included.",
        "",
        "Found while building the harness and fixed: when Stripe sends an invoice's last "
        "`invoice.payment_failed` and its `invoice.marked_uncollectible` in the same second, "
        "`Ledger.dunning_state` broke the tie by insertion order, so the invoice's dunning "
        "state was whichever arrived last. It now breaks such ties by the order of an "
        "invoice's life (`tests/reliability/test_webhook_storm.py::"
        "test_a_final_failure_and_its_write_off_in_one_second_end_uncollectible_in_any_order`).",
        "",
    ]
    return "\n".join(lines)


def _write_section(path: Path, section: str) -> None:
    """Replace the Webhooks section or append it; create the file with a title if missing."""
    replace_section(path, SECTION, section, empty_text="# Reliability\n")


if __name__ == "__main__":
    main()

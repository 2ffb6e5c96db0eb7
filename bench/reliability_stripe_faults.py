"""The Stripe-faults part of the reliability harness in its full form; writes the figures into
the "## Stripe faults" section of docs/reliability.md (and its row in the list of parts).

    uv run --frozen python bench/reliability_stripe_faults.py                 # 4 days, v1
    uv run --frozen python bench/reliability_stripe_faults.py --scale reduced --no-write

For 0 % (the baseline), 10 %, 30 % and 50 % of API requests faulted (429, 500, timeout, answer
lost after the commit, drawn evenly; ``tests/reliability/stripe_fault_rates.py``), the same
generated days are billed in a fresh pipeline (its own warehouse, ledger database on one
embedded PostgreSQL, and local Stripe), re-run while a run fails, then checked: Stripe holds
exactly the rated usage, each meter event once, every outbox write sent, and the pipeline's
whole state (``tests/reliability/pipeline_state.py``, ledger content hash included) equals the
baseline's. Overhead is the wall time against the baseline's. Exit status 1 when a check fails
(the section is written all the same, saying so).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import psycopg  # noqa: E402
from doc_sections import replace_section  # noqa: E402
from reliability_reruns import _one_line, replace_status_row  # noqa: E402

from ledger import embedded_ledger_url  # noqa: E402
from tests.reliability import stripe_fault_rates as kit  # noqa: E402
from tests.reliability.pipeline_state import describe_differences  # noqa: E402

DOC = PROJECT_ROOT / "docs" / "reliability.md"
SECTION = "## Stripe faults"
COMMAND = "uv run --frozen python bench/reliability_stripe_faults.py"
STATUS_ROW_START = "| Stripe faults |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", choices=sorted(kit.SCALES), default="full")
    parser.add_argument("--api", choices=("v1", "stream"), help="override the scale's API")
    parser.add_argument("--no-write", action="store_true", help="print, leave the docs alone")
    parser.add_argument("--doc", type=Path, default=DOC, help="the file whose section to write")
    args = parser.parse_args()
    scale = kit.SCALES[args.scale]
    if args.api:
        scale = replace(scale, meter_events_api=args.api)

    work_dir = Path(tempfile.mkdtemp(prefix="mbsf"))
    server_url = embedded_ledger_url(work_dir / "pg")
    results: list[kit.RateResult] = []
    problems: dict[float, list[str]] = {}
    for rate in (0.0, *kit.RATES):
        result = kit.bill_at_rate(
            rate,
            work_dir / f"rate{round(rate * 100)}",
            _new_database(server_url),
            scale,
            os.environ.__setitem__,
        )
        found = result.exactly_once_problems()
        if results and result.fingerprint != results[0].fingerprint:
            found.append(
                "state differs from 0 %: "
                + describe_differences(results[0].fingerprint, result.fingerprint)
            )
        problems[rate] = found
        results.append(result)
        print(
            f"{rate:.0%}: {result.runs} runs, {result.seconds:.0f} s, faults {result.injected}, "
            f"{result.attempts_per_write:.2f} attempts per write: "
            + ("pass" if not found else f"FAIL {found}"),
            flush=True,
        )

    section = _section(scale, args.scale, results, problems)
    if args.no_write:
        print(section)
    else:
        replace_section(args.doc, SECTION, section, empty_text="# Reliability\n")
        passed = not any(problems.values())
        replace_status_row(
            args.doc,
            STATUS_ROW_START,
            f"| Stripe faults | {'built' if passed else 'built, failing'} | section *Stripe "
            f"faults*: `{COMMAND}` |",
        )
        print(f"wrote the {SECTION!r} section of {args.doc}")
    if any(problems.values()):
        sys.exit(1)


def _new_database(server_url: str) -> str:
    name = f"faults_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    return server_url.replace("/postgres?", f"/{name}?", 1)


def _section(
    scale: kit.FaultScale,
    scale_name: str,
    results: list[kit.RateResult],
    problems: dict[float, list[str]],
) -> str:
    baseline = results[0]
    header = [
        "test",
        "injected",
        "how many",
        "checked",
        "result",
        "runs",
        "attempts per write (mean, max)",
        "requests seen",
        "duration",
        "overhead",
    ]
    rows = []
    for result in results:
        found = problems[result.rate]
        injected = (
            "nothing"
            if not result.faults
            else ", ".join(f"{kind} {result.injected.get(kind, 0):,}" for kind in kit.FAULT_KINDS)
        )
        rows.append(
            [
                f"{result.rate:.0%} of requests faulted",
                injected,
                f"{result.faults:,} faults in {result.requests_seen:,} API requests; "
                f"{result.writes:,} meter event writes, {result.write_attempts:,} write "
                f"requests ({result.write_requests_carried_out:,} carried out); "
                f"{result.idempotent_replays:,} keyed requests answered with the saved "
                "response (retries after an answer lost, or too slow for the client)",
                "Stripe usage = rating per customer, meter and day; meter events = writes; "
                "outbox all sent; ledger verifies; 0 duplicates"
                + ("" if result is baseline else "; whole state = 0 % (ledger content hash too)"),
                "pass" if not found else "FAIL: " + _one_line(found),
                str(result.runs),
                f"{result.attempts_per_write:.2f}, {result.write_attempts_max}",
                f"{result.requests_seen:,}",
                f"{result.seconds:,.0f} s",
                "-" if result is baseline else f"{result.seconds / baseline.seconds - 1:+.0%}",
            ]
        )
    passed = sum(1 for found in problems.values() if not found)
    api = (
        "v1 (`POST /v1/billing/meter_events`, one request per meter event)"
        if scale.meter_events_api == "v1"
        else "the v2 meter event stream (up to 100 events a request)"
    )
    lines = [
        SECTION,
        "",
        f"Produced by `{COMMAND}` (the full form of `tests/reliability/test_stripe_fault_rates.py`;"
        " CI runs that test reduced: the clean run the harness shares (2 days of 3 customers) "
        "sent again at 10, 30 and 50 % through the job's Stripe steps alone, on v1: "
        "`CI=true uv run --frozen pytest -m reliability tests/reliability`).",
        "",
        f"Last run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, scale {scale_name}: {scale.days} days "
        f"from {kit.FIRST_DAY.isoformat()}, {scale.customers} customers, "
        f"{scale.events_per_day} events a day (seed {kit.DATA_SEED}), meter events sent on "
        f"{api}, faults seeded {kit.FAULT_SEED}: 429, 500, timeout (the server answers after "
        f"{kit.FAULT_TIMEOUT_SECONDS} s, the client gives up after {kit.CLIENT_TIMEOUT_SECONDS} s)"
        " and lost (carried out and committed, then a 502), drawn evenly. The days are billed "
        f"as one backfill, run again while a run fails (at most {kit.MAX_RUNS} runs): a write "
        "still failing after 6 attempts stays pending and fails the run, as does a read that "
        f"gives up. **{passed} of {len(results)} rows pass.**",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        "Attempts per write: the requests the outbox's sender made for each meter event write "
        "(each one reached the server, faulted or not), summed over the runs; requests seen: "
        "every API request the server saw, reads and meter and catalogue set-up included. "
        "Overhead: wall time of all runs against 0 %, on a shared 2-core machine (a Dagster run "
        "costs 40-90 s here whatever its size, so the overhead is mostly whole re-runs: the "
        "backoff itself is short, 0.05 s doubling up to 2 s with jitter; other work on the "
        "machine moves one run's time by more than that, hence negative overheads).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

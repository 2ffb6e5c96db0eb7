"""The crash part of the reliability harness in its full form; writes the table into the
"## Crashes" section of docs/reliability.md and the part's row in its list of parts.

    uv run --frozen python bench/reliability_crashes.py                  # every point
    uv run --frozen python bench/reliability_crashes.py --only ledger.mid_batch --no-write

Every crash point of ``tests/reliability/crashes.py`` is fired: the pipeline (``run_days`` in a
child process of its own session, as ``meterbook backfill`` runs it) kills itself with SIGKILL at
the point, or the real webhook receiver (``meterbook stripe webhooks``) does. Pipeline points run in
chains, one chain per writing step, each in its own scenario (data directory, ledger database, local
Stripe): a run killed at each point of the chain in turn, each run being the re-run of the previous
crash, then a last run without a crash point; its end state is compared with a clean run's
(``pipeline_state.fingerprint``: ledger content hash and totals, Stripe's usage per customer, meter
and day, the outbox, duplicate rows, the warehouse tables' content; and the line counts), and with
what the rated slots call for (``crashes.derived_state``). Right after each crash the ledger's
invariants and Stripe's identifiers are checked too. Webhook points each kill a receiver of their
own; Stripe redelivers what got no 2xx (or the stored events are re-processed); the end state is
compared with an uninterrupted in-order delivery's. Exit status 1 when a check fails (the section is
written all the same, saying so).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import psycopg  # noqa: E402
from doc_sections import replace_section  # noqa: E402

from ledger import embedded_ledger_url  # noqa: E402
from tests.reliability import crashes  # noqa: E402

DOC = PROJECT_ROOT / "docs" / "reliability.md"
SECTION = "## Crashes"
COMMAND = "uv run --frozen python bench/reliability_crashes.py"
STATUS_ROW_PREFIX = "| Crashes |"
# Pipeline points by chain: the order the pipeline reaches them.
CHAINS = {
    "ingestion": [p for p in crashes.PIPELINE_POINTS if p.step == "ingestion"],
    "dbt": [p for p in crashes.PIPELINE_POINTS if p.at.startswith("dbt.meterbook")],
    "ledger posting": [p for p in crashes.PIPELINE_POINTS if p.step == "ledger posting"],
    "Stripe sending": [p for p in crashes.PIPELINE_POINTS if p.step == "Stripe sending"],
    "finance": [
        p
        for p in crashes.PIPELINE_POINTS
        if p.at.startswith(("finance.", "ledger.replica", "dbt.finance"))
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", action="append", help="run only these points (repeatable)")
    parser.add_argument("--no-write", action="store_true", help="print, leave the docs alone")
    parser.add_argument("--doc", type=Path, default=DOC, help="the file whose section to write")
    args = parser.parse_args()
    assert sum(len(points) for points in CHAINS.values()) == len(crashes.PIPELINE_POINTS)

    scale = crashes.SCALES["full"]
    root = Path(tempfile.mkdtemp(prefix="mbcr"))
    postgres = embedded_ledger_url(root / "pg")
    started = time.perf_counter()
    workspace = crashes.make_workspace(root, postgres, scale)
    wanted = set(args.only or [p.at for p in crashes.ALL_POINTS])
    outcomes: list[crashes.Outcome] = []
    notes: list[str] = []

    clean_seconds, clean_problems = 0.0, []
    if any(p.at in wanted for p in crashes.PIPELINE_POINTS):
        clean, clean_seconds, derived_differences = crashes.clean_state(workspace)
        clean_problems = crashes.expected_problems(clean) + [
            f"the derived expectation differs from it: {d}" for d in derived_differences
        ]
        print(f"clean run: {clean_seconds:.0f} s, problems {clean_problems}", flush=True)
    for chain, points in CHAINS.items():
        chosen = [p for p in points if p.at in wanted]
        if not chosen:
            continue
        chain_started = time.perf_counter()
        found = crashes.crash_chain(workspace, chosen, clean, name=f"chain_{chain.split()[0]}")
        for outcome in found:
            outcome.notes.append(f"chain {chain}")
            _progress(outcome)
        outcomes += found
        notes.append(f"chain {chain}: {time.perf_counter() - chain_started:,.0f} s")

    webhook_points = [p for p in crashes.WEBHOOK_POINTS if p.at in wanted]
    if webhook_points:
        from tests.reliability import webhook_storm as storm_kit

        storm = storm_kit.generate_storm(events=scale.webhook_events, seed=crashes.SEED)
        webhook_clean = crashes.webhook_clean_state(storm, _new_database(postgres))
        for crash in webhook_points:
            outcome = crashes.webhook_crash_and_redeliver(
                storm, _new_database(postgres), crash, webhook_clean
            )
            _progress(outcome)
            outcomes.append(outcome)

    total = time.perf_counter() - started
    section = _section(scale, outcomes, clean_seconds, clean_problems, total, notes)
    if args.no_write:
        print(section)
    else:
        _write(args.doc, section, outcomes, args.only or [])
        print(f"wrote the {SECTION!r} section of {args.doc}")
    if clean_problems or any(not o.passed for o in outcomes):
        sys.exit(1)


def _new_database(server_url: str) -> str:
    name = f"crash_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    return server_url.replace("/postgres?", f"/{name}?", 1)


def _progress(outcome: crashes.Outcome) -> None:
    print(
        f"{crashes.describe(outcome)} (crash run {outcome.crash_seconds:.0f} s, "
        f"re-run {outcome.rerun_seconds:.0f} s; {'; '.join(outcome.notes)})",
        flush=True,
    )


PIPELINE_CHECKED = (
    "killed there (SIGKILL); right after: ledger invariants, no identifier twice at Stripe; "
    "after the chain's last run: = clean run (ledger content hash and totals, Stripe usage per "
    "customer, meter and day, outbox all sent once, no duplicate rows, warehouse tables' "
    "content, line counts), no Dagster run left started"
)
WEBHOOK_CHECKED = (
    "killed there (SIGKILL); after redelivery: = in-order delivery (ledger content hash, "
    "balances, transactions per kind, dunning steps and states, subscriptions, disputes, "
    "stored events processed)"
)


FOUND = (
    "Found while building this harness and fixed: a run killed at any point left its Dagster "
    "run marked started and the `duckdb_warehouse` pool's only slot claimed by its step (runs "
    "the CLI launches execute in the CLI's process, and nothing frees a dead process's slot), "
    "so the re-run's first warehouse step waited for that slot for ever. `run_days` now holds "
    "a run lock (`data/dagster/meterbook-runs.lock`, released by the kernel when its process "
    "dies) and, once it holds it, marks the CLI's runs still in progress failed and frees "
    "their slots (`orchestration/runner.py`, "
    "`tests/pipeline/test_orphaned_runs.py`)."
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _section(
    scale: crashes.Scale,
    outcomes: list[crashes.Outcome],
    clean_seconds: float,
    clean_problems: list[str],
    total: float,
    notes: list[str],
) -> str:
    passed = sum(o.passed for o in outcomes)
    header = ["test", "injected", "how many times", "checked", "result"]
    lines = [
        SECTION,
        "",
        f"Produced by `{COMMAND}` (the full form of `tests/reliability/test_crashes.py`; CI "
        "runs it reduced: one pipeline point, `stripe.after_request_before_outbox_update`, "
        "inside `tests/reliability/test_reruns.py` against the clean run the harness shares, "
        "and one receiver point, `webhooks.mid_process:8`, with 60 events: "
        "`CI=true uv run --frozen pytest -m reliability tests/reliability`).",
        "",
        f"Last run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {scale.days} arrival days, "
        f"{scale.customers} customers, {scale.events_per_day} events a day (seed "
        f"{crashes.SEED}), billed as one Dagster run per process; a webhook storm of "
        f"{scale.webhook_events} events. {total:,.0f} s in all (clean run {clean_seconds:,.0f} s; "
        f"{'; '.join(notes)}). **{passed} of {len(outcomes)} points pass.**"
        + (f" The clean run itself: {'; '.join(clean_problems)}." if clean_problems else ""),
        "",
        "How it runs: `METERBOOK_CRASH_AT=<point>[:n]` (test only; see `crash_points/`) makes "
        "the process kill itself with SIGKILL the n-th time it reaches the point, or its whole "
        "process group (dbt with it) for the dbt points. The pipeline runs as a child process "
        "(`run_days`, as `meterbook backfill` runs it) against a local Stripe that lives in "
        "the harness (Stripe survives the crash and keeps what it accepted) and an embedded "
        "PostgreSQL. Pipeline points run in chains, one per writing step: each run of a chain "
        "is killed at the next point, and is the re-run of the previous crash; a last run "
        "without a crash point ends the chain and is compared with a clean run of the same "
        "data in a scenario of its own. Webhook points each kill a receiver "
        "(`meterbook stripe webhooks`) of their own; Stripe then redelivers what got no 2xx, "
        "the event in flight first, to a receiver started again (or `--reprocess` is run "
        "again).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for outcome in outcomes:
        crash = outcome.point
        result = "pass" if outcome.passed else "FAIL: " + "; ".join(outcome.problems)[:400]
        lines.append(
            "| "
            + " | ".join(
                _cell(cell)
                for cell in (
                    f"`{crash.at}` ({crash.step})",
                    crash.interrupts,
                    "1 (" + "; ".join(outcome.notes) + ")" if outcome.notes else "1",
                    WEBHOOK_CHECKED if crash.webhook else PIPELINE_CHECKED,
                    result,
                )
            )
            + " |"
        )
    lines += ["", FOUND]
    return "\n".join(lines) + "\n"


def _merged(path: Path, section: str, only: list[str]) -> str:
    """With ``--only``, the section keeps the rows of the points not run now (and its
    introduction, with a sentence saying which rows are newer); the pass count is recounted."""
    old = _section_text(path)
    if not old:
        return section
    new_rows = {_row_point(line): line for line in section.splitlines() if _row_point(line)}
    old_rows = {_row_point(line): line for line in old.splitlines() if _row_point(line)}
    rows = [
        new_rows.get(p.at) or old_rows[p.at]
        for p in crashes.ALL_POINTS
        if p.at in new_rows or p.at in old_rows
    ]
    head = [line for line in old.splitlines() if not _row_point(line)]
    table_at = head.index(next(line for line in head if line.startswith("| test |")))
    passed = sum(line.rstrip().endswith("| pass |") for line in rows)
    intro = "\n".join(head[:table_at])
    intro = re.sub(
        r"\*\*\d+ of \d+ points pass\.\*\*", f"**{passed} of {len(rows)} points pass.**", intro
    )
    note = (
        f" Rows of {', '.join(f'`{at}`' for at in only)} from a later run of this command "
        f"with `--only` ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)."
    )
    intro = intro.replace(" points pass.**", " points pass.**" + note, 1)
    return "\n".join([intro, *head[table_at : table_at + 2], *rows, *head[table_at + 2 :]]) + "\n"


def _section_text(path: Path) -> str:
    if not path.exists():
        return ""
    text = path.read_text()
    start = text.find(SECTION + "\n")
    if start < 0:
        return ""
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end >= 0 else len(text)]


def _row_point(line: str) -> str | None:
    match = re.match(r"\| `([^`]+)` \(", line)
    return match.group(1) if match else None


def _write(path: Path, section: str, outcomes: list[crashes.Outcome], only: list[str]) -> None:
    if only:
        section = _merged(path, section, only)
    replace_section(path, SECTION, section, empty_text="# Reliability\n")
    rows = [line for line in section.splitlines() if _row_point(line)]
    failing = sum(not line.rstrip().endswith("| pass |") for line in rows)
    status = "built" if not failing else f"built, {failing} failing"
    row = f"| Crashes | {status} | section *Crashes*: `{COMMAND}` |"
    text = path.read_text()
    path.write_text(
        "\n".join(row if line.startswith(STATUS_ROW_PREFIX) else line for line in text.split("\n"))
    )


if __name__ == "__main__":
    main()

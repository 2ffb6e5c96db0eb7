"""The bad-input part of the reliability harness in its full form; writes the figures into the
"## Bad input" section of docs/reliability.md.

    uv run --frozen python bench/reliability_bad_input.py                  # 30,000 of each kind
    uv run --frozen python bench/reliability_bad_input.py --scale reduced --no-write

Builds the corpus of ``tests/reliability/bad_input.py`` (more than 40 kinds of bad lines and bad
files mixed into valid hour files of three arrival days), ingests it with ``ingest_usage_day``
into a DuckDB file in a temporary directory, grows a file and re-ingests, injects the files that
cannot be read one at a time, re-runs the days in reverse order, and checks every line, file and
day after each step, as ``tests/reliability/test_bad_input.py`` does. Exit status 1 when a check
fails (the section is written all the same, saying so).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from doc_sections import replaced_section  # noqa: E402

from tests.reliability import bad_input  # noqa: E402
from tests.reliability.bad_input import BadInputRun, KindResult  # noqa: E402

DOC = PROJECT_ROOT / "docs" / "reliability.md"
SECTION = "## Bad input"
COMMAND = "uv run --frozen python bench/reliability_bad_input.py"
TITLE = "# Reliability"
INTRO = f"""What the reliability harness injected, how often, what it checked and what came
out. Each part has a section below, written by the command stated at its top (the full form);
CI runs each part reduced under the pytest marker `reliability`
(`uv run --frozen pytest -m reliability tests/reliability`). A part that has not run is listed
here as *not yet run*, with the reason.

| part | status | where |
|---|---|---|
| Bad input (lines and files) | built | section *Bad input*: `{COMMAND}` |
| Webhooks | built | section *Webhooks*: `uv run --frozen python bench/reliability_webhooks.py` |
| Re-runs | not yet run | harness part not built yet (issue: reliability harness) |
| Crashes | not yet run | harness part not built yet (issue: reliability harness) |
| Stripe faults | not yet run | harness part not built yet (issue: reliability harness) |
"""
INTRO_MARK = "| part | status | where |"
CHECKED_SHORT = {
    "line": "each line",
    "file": None,  # the kind's own check, then "each line"
    "failing file": "clear error, nothing written, day fine once fixed",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", choices=sorted(bad_input.INSTANCES_BY_SCALE), default="full")
    parser.add_argument("--seed", type=int, default=bad_input.SEED)
    parser.add_argument("--no-write", action="store_true", help="print, leave the docs alone")
    parser.add_argument("--doc", type=Path, default=DOC, help="the file whose section to write")
    args = parser.parse_args()

    work_dir = Path(tempfile.mkdtemp(prefix="mb_bad_input_"))
    try:
        run = bad_input.run_bad_input(work_dir, scale=args.scale, seed=args.seed)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    for row in (*run.kinds, *run.checks):
        print(f"{row.name}: {row.how_many}: {'pass' if row.passed else row.problems}", flush=True)
    section = _section(run)
    if args.no_write:
        print(section)
    else:
        _write_section(args.doc, section)
        print(f"wrote the {SECTION!r} section of {args.doc}")
    if not run.passed:
        sys.exit(1)


def _result(row: KindResult) -> str:
    if row.passed:
        return "pass"
    problems = "; ".join(row.problems)
    return "FAIL: " + (problems if len(problems) <= 300 else problems[:297] + "…")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def _section(run: BadInputRun) -> str:
    quarantined = {
        reason: count
        for reason, count in run.outcomes.items()
        if reason not in (bad_input.ACCEPTED, bad_input.DUPLICATE)
    }
    seconds = ", ".join(
        f"{step} {value:,.0f} s" for step, value in run.seconds.items() if step != "total"
    )
    header = ["test", "injected", "how many", "expected", "checked", "result"]
    rows = []
    for row in run.kinds:
        level = bad_input.ALL_KINDS[row.name].level
        checked = CHECKED_SHORT[level] or (bad_input.CHECKED_FILES[row.name] + "; each line")
        rows.append([row.name, row.injected, row.how_many, row.outcome, checked, _result(row)])
    for row in run.checks:
        rows.append(
            [
                row.name.replace("_", " "),
                "the whole corpus",
                row.how_many,
                "",
                row.checked,
                _result(row),
            ]
        )
    passed = sum(row.passed for row in (*run.kinds, *run.checks))
    lines = [
        SECTION,
        "",
        f"Produced by `{COMMAND}` (the full form of `tests/reliability/test_bad_input.py`; CI "
        f"runs that test reduced, {bad_input.INSTANCES_BY_SCALE['reduced']:,} instances of "
        "each kind: `uv run --frozen pytest -m reliability tests/reliability/test_bad_input.py`"
        ").",
        "",
        f"Last run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, scale {run.scale} "
        f"({bad_input.INSTANCES_BY_SCALE[run.scale]:,} instances of each line kind, "
        f"{bad_input.FILE_VARIANTS_BY_SCALE[run.scale]} variants of each failing file), seed "
        f"{run.seed}: {run.raw_lines:,} raw lines in {run.files} files over three arrival days "
        f"({', '.join(day.isoformat() for day in bad_input.DAYS)}), {run.ingests} calls of "
        f"`ingest_usage_day`, {run.seconds['total']:,.0f} s ({seconds}). "
        f"**{passed} of {len(rows)} rows pass.** Outcomes: accepted "
        f"{run.outcomes.get(bad_input.ACCEPTED, 0):,}, duplicate "
        f"{run.outcomes.get(bad_input.DUPLICATE, 0):,}, quarantined "
        f"{sum(quarantined.values()):,} under {len(quarantined)} reasons ("
        + (
            "every reason ingestion gives"
            if set(quarantined) >= bad_input.QUARANTINE_REASONS
            else "not produced: "
            + ", ".join(sorted(bad_input.QUARANTINE_REASONS - set(quarantined)))
        )
        + ").",
        "",
        "How it runs: the corpus (valid events of 25 known customers with every line kind mixed "
        "in at random places; lines DuckDB's CSV reader cannot split go to hours 20-23, so "
        "both of ingestion's readers are exercised) is ingested day by day into a DuckDB file; "
        "then a file grows by a second gzip member and its day is re-ingested; then each "
        "failing file is put into the third day, ingested, checked and removed (or completed); "
        "then the three days are re-ingested in reverse order. Everything is checked after each "
        "of these four rounds. *Each line* means: every line of the kind is in the ingest "
        "tables exactly once with the expected status and reason; a quarantined line keeps its "
        "raw text (the first 4,096 characters; bytes that are not UTF-8 as `\\xNN`); a line that "
        "parses has its `event_id` and its UTC `occurred_at` and `received_at` as sent. When a "
        "day fails, every line kind is also ingested alone, so the table names the kinds that "
        "fail a day.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows),
        "",
        "Found while building this harness (each one reproduced by it on the code before the "
        "fix) and fixed in `ingestion/usage_events.py`, each with a regression test in "
        "`tests/test_ingestion.py`: a token count between 2**63 and 2**64 - 1 failed "
        "the whole day (BIGINT cast); an offset beyond 23:59 (`+24:00`, `+99:00`) was applied "
        "and billed the event days away; one byte that is not UTF-8, a carriage return, the "
        "record separator or a line over 1 MiB made DuckDB's CSV reader refuse the file and "
        "the day failed (such a file is now split in Python); the blank line of a CRLF file "
        "was `invalid_json`; an empty gzip file was missing from `usage_files`; a corrupted "
        "byte that kept the file's size was ingested without an error (DuckDB does not check "
        "the gzip CRC; every file is now decompressed in full in a background thread); "
        '`"event_type": null` failed the whole day (NOT NULL constraint).',
        "",
        "Known and kept: DuckDB's JSON reader accepts a trailing comma (`trailing_comma`), and "
        "a JSON integer beyond 64 bits reads as a float, so it is `invalid_<tokens>_type`, not "
        "`_too_large`. A conflicting duplicate has no raw text in "
        "`ingest.quarantined_usage_lines` (it is stored parsed, in `ingest.usage_event_lines`, "
        "with status `conflict`).",
        "",
    ]
    return "\n".join(lines)


def _write_section(path: Path, section: str) -> None:
    """Replace the section (up to the next ``## `` heading) or append it; create the file with
    its title, and give it the introduction (the list of parts) if it lacks one. Read right
    before writing: others write other sections."""
    text = path.read_text() if path.exists() else TITLE + "\n"
    if INTRO_MARK not in text:
        head, newline, rest = text.partition("\n")
        if head.strip() != TITLE:
            head, newline, rest = TITLE, "\n", text
        text = head + newline + "\n" + INTRO + ("\n" + rest.lstrip("\n") if rest.strip() else "")
    path.write_text(replaced_section(text, SECTION, section))


if __name__ == "__main__":
    main()

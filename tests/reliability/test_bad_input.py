"""Reliability: bad lines and bad files, ingested with ``ingest_usage_day``, every line checked.

The corpus (``bad_input.build_corpus``) mixes more than 40 kinds of bad input into valid hour
files; ``bad_input.run_bad_input`` ingests it into a DuckDB file, grows a file, injects files
that cannot be read, re-runs the days in reverse order, and checks each line's outcome, each
file's and each day's counts, and the quarantine records after every step. Each test below
asserts one kind's or one check's result, with the problems found as the failure message.

CI runs the reduced form (300 instances of each kind); ``METERBOOK_RELIABILITY_SCALE=full`` runs
30,000 (``bench/reliability_bad_input.py`` runs that and writes the table of
``docs/reliability.md``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability import bad_input
from tests.reliability.bad_input import (
    CHECKS,
    FILE_KINDS,
    LINE_GENERATORS,
    LINE_KINDS,
    QUARANTINE_REASONS,
    BadInputRun,
    build_corpus,
    file_digests,
    reliability_scale,
    run_bad_input,
)

pytestmark = pytest.mark.reliability


@pytest.fixture(scope="module")
def bad_input_run(tmp_path_factory: pytest.TempPathFactory) -> BadInputRun:
    return run_bad_input(tmp_path_factory.mktemp("bad_input"), scale=reliability_scale())


def _report(run: BadInputRun, name: str) -> str:
    result = run.result(name)
    return f"{name} ({result.how_many}; expected: {result.outcome}):\n" + "\n".join(result.problems)


def test_the_kinds_are_named_described_and_generated() -> None:
    kinds = [*LINE_KINDS, *FILE_KINDS]
    assert len(kinds) >= 15
    assert len({kind.name for kind in kinds}) == len(kinds)
    assert all(kind.injected and kind.outcome for kind in kinds)
    assert set(LINE_GENERATORS) == {kind.name for kind in LINE_KINDS} - {"valid"}


@pytest.mark.parametrize("kind", [kind.name for kind in LINE_KINDS])
def test_each_line_kind_has_its_outcome(bad_input_run: BadInputRun, kind: str) -> None:
    assert bad_input_run.result(kind).passed, _report(bad_input_run, kind)


@pytest.mark.parametrize("kind", [kind.name for kind in FILE_KINDS if kind.level == "file"])
def test_each_file_kind_is_accounted_for(bad_input_run: BadInputRun, kind: str) -> None:
    result = bad_input_run.result(kind)
    assert not result.how_many.startswith("0 files"), result.how_many
    assert result.passed, _report(bad_input_run, kind)


@pytest.mark.parametrize("kind", [kind.name for kind in FILE_KINDS if kind.level == "failing file"])
def test_an_unreadable_file_is_a_clear_error_and_writes_nothing(
    bad_input_run: BadInputRun, kind: str
) -> None:
    result = bad_input_run.result(kind)
    assert not result.how_many.startswith("0 files"), result.how_many
    assert result.passed, _report(bad_input_run, kind)


@pytest.mark.parametrize("check", list(CHECKS))
def test_the_whole_corpus_is_accounted_for(bad_input_run: BadInputRun, check: str) -> None:
    assert bad_input_run.result(check).passed, _report(bad_input_run, check)


def test_every_quarantine_reason_is_exercised(bad_input_run: BadInputRun) -> None:
    produced = set(bad_input_run.outcomes)
    assert QUARANTINE_REASONS - produced == set()
    assert {"accepted", "duplicate"} <= produced
    # raw = accepted + duplicates + quarantined over the whole corpus, as planned.
    assert sum(bad_input_run.outcomes.values()) == bad_input_run.raw_lines


def test_the_corpus_is_seeded(tmp_path: Path) -> None:
    first = build_corpus(tmp_path / "first", scale="reduced", instances=12)
    again = build_corpus(tmp_path / "again", scale="reduced", instances=12)
    other = build_corpus(tmp_path / "other", scale="reduced", instances=12, seed=bad_input.SEED + 1)
    assert file_digests(first.raw_dir) == file_digests(again.raw_dir)
    # Another seed: the same days and exports, other bytes (which hours get a file can differ).
    first_files, other_files = file_digests(first.raw_dir), file_digests(other.raw_dir)
    assert {f.rsplit("/hour=", 1)[0] for f in first_files} == {
        f.rsplit("/hour=", 1)[0] for f in other_files
    }
    shared = first_files.keys() & other_files.keys()
    assert any(first_files[f] != other_files[f] for f in shared if f.startswith("usage/"))

"""subscription_fee_lines against the Python reference (pricing.prorations): the worked examples
of docs/pricing.md (*Flat fees and prorations*) figure by figure, and a batch of random
subscription histories, all built by one dbt build (which also runs the fee models' unit and
data tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.rating.fee_cases import (
    ExpectedLine,
    FeeCase,
    as_expected,
    doc_fee_cases,
    random_fee_cases,
    reference_lines,
)
from tests.rating.fee_harness import BuiltLine, build_fee_lines

RANDOM_CASES = 200
RANDOM_SEED = 20261201
DOC_CASES = doc_fee_cases()


@pytest.fixture(scope="module")
def all_fee_cases() -> list[FeeCase]:
    return DOC_CASES + random_fee_cases(RANDOM_SEED, RANDOM_CASES)


@pytest.fixture(scope="module")
def dbt_fee_lines(
    all_fee_cases: list[FeeCase], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[BuiltLine]]:
    work_dir: Path = tmp_path_factory.mktemp("dbt_fees")
    return build_fee_lines(all_fee_cases, work_dir)


def _ordered(lines: list[ExpectedLine]) -> list[ExpectedLine]:
    return sorted(lines, key=lambda line: (line.subscription_id, line.period, line.line_type))


def _built_as_expected(line: BuiltLine) -> ExpectedLine:
    return ExpectedLine(
        subscription_id=line.subscription_id,
        period=line.billing_period_start_at.strftime("%Y-%m-%d"),
        line_type=line.line_type,
        quantity_seconds=line.quantity_seconds,
        period_seconds=line.period_seconds,
        unit_amount_minor=line.unit_amount_minor,
        amount_minor_exact=line.amount_minor_exact,
        amount_minor=line.amount_minor,
    )


def test_the_doc_works_stripes_example_and_every_line_type() -> None:
    assert DOC_CASES[0].name.startswith("Stripe's example")
    line_types = {line.line_type for case in DOC_CASES for line in case.expected}
    assert line_types == {"flat_fee", "proration_charge", "proration_credit"}
    stripe = DOC_CASES[0].expected
    prorations = [line for line in stripe if line.line_type != "flat_fee"]
    assert sum(line.amount_minor for line in prorations) == 500  # +$5.00
    assert any(
        line.amount_minor != line.amount_minor_exact for c in DOC_CASES for line in c.expected
    )


@pytest.mark.parametrize("case", DOC_CASES, ids=[case.name for case in DOC_CASES])
def test_the_reference_reproduces_the_worked_example(case: FeeCase) -> None:
    assert _ordered([as_expected(line) for line in reference_lines(case)]) == _ordered(
        case.expected
    )


@pytest.mark.parametrize("case", DOC_CASES, ids=[case.name for case in DOC_CASES])
def test_dbt_reproduces_the_worked_example(
    case: FeeCase, dbt_fee_lines: dict[str, list[BuiltLine]]
) -> None:
    assert _ordered([_built_as_expected(line) for line in dbt_fee_lines[case.name]]) == _ordered(
        case.expected
    )


def test_dbt_bills_every_random_case_like_the_reference(
    all_fee_cases: list[FeeCase], dbt_fee_lines: dict[str, list[BuiltLine]]
) -> None:
    differences = []
    line_types = set()
    for case in all_fee_cases:
        expected = [
            (
                line.customer_id,
                line.subscription_id,
                line.billing_period_start_at,
                line.line_type,
                line.quantity_seconds,
                line.period_seconds,
                line.unit_amount_minor,
                line.amount_minor_exact,
                line.amount_minor,
            )
            for line in reference_lines(case)
        ]
        actual = [
            (
                line.customer_id,
                line.subscription_id,
                line.billing_period_start_at,
                line.line_type,
                line.quantity_seconds,
                line.period_seconds,
                line.unit_amount_minor,
                line.amount_minor_exact,
                line.amount_minor,
            )
            for line in dbt_fee_lines[case.name]
        ]
        line_types.update(line[3] for line in actual)
        if actual != expected:
            differences.append((case.name, case.subscriptions, case.fees, expected, actual))
    assert not differences[:3], f"{len(differences)} cases differ; first: {differences[:1]}"
    assert line_types == {"flat_fee", "proration_charge", "proration_credit"}

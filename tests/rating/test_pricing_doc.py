"""docs/pricing.md works an example of each charge model; every figure of it is reproduced here
from the doc's own rows and tables, by the Python reference and by the dbt rating."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pricing.charges import CHARGE_MODELS, minimum_top_up
from tests.rating.cases import Case, doc_cases, doc_minimum_rows, reference_rating
from tests.rating.dbt_harness import RatedRow

EXAMPLES = doc_cases()
CHARGE_MODELS_SHOWN = {row["charge_model"] for case in EXAMPLES for row in case.charge_rows}


def test_the_doc_works_an_example_of_every_charge_model_and_an_allowance() -> None:
    assert set(CHARGE_MODELS) == CHARGE_MODELS_SHOWN
    assert any(int(row["included_units"]) for c in EXAMPLES for row in c.charge_rows)
    assert any(len(case.charge_rows) > 1 for case in EXAMPLES)  # a price change
    assert any(day.amount_minor < 0 for case in EXAMPLES for day in case.expected)


@pytest.mark.parametrize("case", EXAMPLES, ids=[case.name for case in EXAMPLES])
def test_the_reference_reproduces_the_worked_example(case: Case) -> None:
    rated = reference_rating(case)
    assert [
        (
            day.usage_date,
            day.period_to_date_units,
            day.billable_units,
            day.period_to_date_amount_minor,
            day.amount_minor,
        )
        for day in rated
    ] == [
        (
            day.usage_date,
            day.period_to_date_units,
            day.billable_units,
            day.period_to_date_amount_minor,
            day.amount_minor,
        )
        for day in case.expected
    ]


@pytest.mark.parametrize("case", EXAMPLES, ids=[case.name for case in EXAMPLES])
def test_dbt_reproduces_the_worked_example(
    case: Case, dbt_rated: dict[str, list[RatedRow]]
) -> None:
    assert [
        (row.usage_date, row.period_to_date_amount_minor_exact, row.amount_minor_exact)
        for row in dbt_rated[case.name]
    ] == [
        (day.usage_date, day.period_to_date_amount_minor, day.amount_minor) for day in case.expected
    ]


def test_the_minimum_spend_example() -> None:
    rows = doc_minimum_rows()
    assert rows
    for minimum, usage, top_up in rows:
        assert minimum_top_up(minimum_spend_minor=minimum, usage_amount_minor=usage) == top_up
    assert all(isinstance(value, Decimal) for row in rows for value in row)

"""The dbt rating against the Python reference (pricing.charges) on a batch of random price
books and usage, rated by one dbt build (which also runs the model's unit and data tests)."""

from __future__ import annotations

from tests.rating.cases import Case, reference_rating
from tests.rating.dbt_harness import RatedRow


def test_dbt_rates_every_random_case_like_the_reference(
    all_cases: list[Case], dbt_rated: dict[str, list[RatedRow]]
) -> None:
    differences = []
    models = set()
    for case in all_cases:
        models.update(row["charge_model"] for row in case.charge_rows)
        expected = [
            (day.usage_date, day.period_to_date_amount_minor, day.amount_minor)
            for day in reference_rating(case)
        ]
        actual = [
            (row.usage_date, row.period_to_date_amount_minor_exact, row.amount_minor_exact)
            for row in dbt_rated[case.name]
        ]
        assert all(row.is_priced for row in dbt_rated[case.name])
        if actual != expected:
            differences.append((case.name, case.charge_rows, case.tier_rows, expected, actual))
    assert not differences[:3], f"{len(differences)} cases differ; first: {differences[:1]}"
    assert models == {"per_unit", "graduated", "volume", "package", "percentage"}

"""One dbt run rates every case of the rating tests: the worked examples of docs/pricing.md and
a batch of random cases, and invoices them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.rating.cases import Case, doc_cases, random_cases
from tests.rating.dbt_harness import RatedRow, RatingBuild, rate_cases

RANDOM_CASES = 400
RANDOM_SEED = 20261130


@pytest.fixture(scope="session")
def all_cases() -> list[Case]:
    return doc_cases() + random_cases(RANDOM_SEED, RANDOM_CASES)


@pytest.fixture(scope="session")
def dbt_build(all_cases: list[Case], tmp_path_factory: pytest.TempPathFactory) -> RatingBuild:
    work_dir: Path = tmp_path_factory.mktemp("dbt_rating")
    return rate_cases(all_cases, work_dir)


@pytest.fixture(scope="session")
def dbt_rated(dbt_build: RatingBuild) -> dict[str, list[RatedRow]]:
    return dbt_build.rated

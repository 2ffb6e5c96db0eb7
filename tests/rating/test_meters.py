"""The Python reading of a meter (pricing/meters.py) agrees with the seed's dbt tests."""

from __future__ import annotations

import csv

import duckdb
import pytest

from orchestration.settings import DBT_PROJECT_DIR
from pricing.meters import meter_definition, parse_property_filters

SEEDS_DIR = DBT_PROJECT_DIR / "seeds"


def _seed_meters() -> list[dict[str, str]]:
    with (SEEDS_DIR / "price_book_meters.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_meter_of_the_price_book_is_well_formed() -> None:
    definitions = [meter_definition(row) for row in _seed_meters()]
    aggregations = {d.aggregation for d in definitions}
    assert {"count", "sum", "unique_count"} <= aggregations
    filtered = [d for d in definitions if d.property_filters]
    assert filtered and all(d.model is None for d in filtered)


def test_property_filters_parse_into_accepted_values() -> None:
    assert parse_property_filters("") == {}
    assert parse_property_filters("request_kind=agent|edit;tool=web_search") == {
        "request_kind": ("agent", "edit"),
        "tool": ("web_search",),
    }


@pytest.mark.parametrize(
    "text",
    ["request_kind", "colour=red", "tool=a;tool=b", "request_kind=", "request_kind=a||b"],
)
def test_a_malformed_property_filter_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="property filter"):
        parse_property_filters(text)


@pytest.mark.parametrize(
    ("aggregation", "quantity_property"),
    [
        ("count", "input_tokens"),
        ("sum", ""),
        ("max", "tool"),
        ("unique_count", "cost_minor"),
        ("median", "input_tokens"),
    ],
)
def test_an_aggregation_without_its_kind_of_property_is_refused(
    aggregation: str, quantity_property: str
) -> None:
    row = {
        "meter_id": "m",
        "event_type": "model_call",
        "aggregation": aggregation,
        "quantity_property": quantity_property,
    }
    with pytest.raises(ValueError, match="meter m"):
        meter_definition(row)


def test_a_meters_event_filter_and_day_aggregate_select_what_dbt_does() -> None:
    """The explain endpoint's SQL over events: any model, agent or edit calls, the latest
    value by occurred_at then event_id (as int_usage_daily breaks ties)."""
    meter = meter_definition(
        {
            "meter_id": "m",
            "event_type": "model_call",
            "model": "",
            "aggregation": "latest",
            "quantity_property": "output_tokens",
            "property_filters": "request_kind=agent|edit",
        }
    )
    condition, parameters = meter.event_filter_sql()
    with duckdb.connect() as conn:
        conn.execute(
            "create table events as select * from (values "
            "('e1', 'model_call', 'small', 'agent', 5, timestamp '2026-11-02 10:00:00'), "
            "('e3', 'model_call', 'large', 'edit', 7, timestamp '2026-11-02 12:00:00'), "
            "('e2', 'model_call', 'large', 'agent', 9, timestamp '2026-11-02 12:00:00'), "
            "('e4', 'model_call', 'large', 'chat', 11, timestamp '2026-11-02 13:00:00'), "
            "('e5', 'tool_call', null, null, 13, timestamp '2026-11-02 14:00:00')) "
            "as t(event_id, event_type, model, request_kind, output_tokens, occurred_at)"
        )
        (latest,) = conn.execute(
            f"select {meter.day_aggregate_sql()} from events where {condition}", parameters
        ).fetchone() or (None,)
    assert latest == 7  # e3 and e2 share the latest time; e3 is the greater id
    assert not meter.is_additive

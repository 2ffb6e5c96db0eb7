"""What a meter of the price book measures, for the Python side (the dbt models hold the
aggregation itself: int_meter_definitions, int_meter_usage_daily; docs/pricing.md, Meters).

A meter counts or aggregates one event type's events that match its model (any when it names
none) and its property filters, over the billing period to date. ``count`` and ``sum`` add up
day by day; ``max``, ``latest`` and ``unique_count`` do not: a day adds the *change* of the
period's value, which can be negative (``latest``) or move to an earlier day when a late event
arrives, so what was sent to Stripe for such a meter may have to go down.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

ADDITIVE_AGGREGATIONS = frozenset({"count", "sum"})
AGGREGATIONS = ADDITIVE_AGGREGATIONS | {"max", "latest", "unique_count"}
NUMERIC_PROPERTIES = ("input_tokens", "output_tokens", "cache_read_tokens", "cost_minor")
DISTINCT_PROPERTIES = ("model", "request_kind", "tool")
FILTER_PROPERTIES = ("request_kind", "tool")


@dataclass(frozen=True)
class MeterDefinition:
    meter_id: str
    event_type: str
    model: str | None
    property_filters: dict[str, tuple[str, ...]]
    aggregation: str
    quantity_property: str | None

    @property
    def is_additive(self) -> bool:
        return self.aggregation in ADDITIVE_AGGREGATIONS

    def matches(self, event: Mapping[str, object]) -> bool:
        """Whether an event (its type, model and filterable properties) counts for this meter."""
        return (
            event.get("event_type") == self.event_type
            and (self.model is None or event.get("model") == self.model)
            and all(event.get(name) in values for name, values in self.property_filters.items())
        )

    def event_filter_sql(self) -> tuple[str, list[str]]:
        """A SQL condition (and its parameters) on event columns that keeps this meter's events."""
        conditions = ["event_type = ?"]
        parameters = [self.event_type]
        if self.model is not None:
            conditions.append("model = ?")
            parameters.append(self.model)
        for name, values in sorted(self.property_filters.items()):
            conditions.append(f"{name} in ({', '.join('?' for _ in values)})")
            parameters.extend(values)
        return " and ".join(conditions), parameters

    def day_aggregate_sql(self, where: str | None = None) -> str:
        """The aggregate over one day's matching events (``day_units`` of int_meter_usage_daily),
        over the rows ``where`` keeps when given."""
        only = f" filter (where {where})" if where else ""
        prop = self.quantity_property
        return {
            "count": f"count(*){only}",
            "sum": f"coalesce(sum({prop}){only}, 0)",
            "max": f"max({prop}){only}",
            "latest": f"arg_max({prop}, (occurred_at, event_id)){only}",
            "unique_count": f"count(distinct {prop}){only}",
        }[self.aggregation]


def parse_property_filters(text: str | None) -> dict[str, tuple[str, ...]]:
    """``request_kind=agent|edit;tool=web_search`` → {property: accepted values}; empty: {}."""
    if not text:
        return {}
    filters: dict[str, tuple[str, ...]] = {}
    for clause in text.split(";"):
        name, separator, values = clause.partition("=")
        if not separator or name not in FILTER_PROPERTIES or name in filters or not values:
            raise ValueError(
                f"property filter {clause!r} in {text!r} is not property=value[|value...] on a "
                f"filterable property ({', '.join(FILTER_PROPERTIES)}), each named once."
            )
        accepted = tuple(values.split("|"))
        if "" in accepted:
            raise ValueError(f"property filter {clause!r} in {text!r} has an empty value.")
        filters[name] = accepted
    return filters


def meter_definition(row: Mapping[str, str | None]) -> MeterDefinition:
    """A row of price_book_meters (CSV or warehouse; empty and null alike mean none), checked
    as the seed's dbt tests check it."""
    meter_id = str(row["meter_id"])
    aggregation = str(row["aggregation"])
    quantity_property = row.get("quantity_property") or None
    if aggregation not in AGGREGATIONS:
        raise ValueError(
            f"meter {meter_id}: aggregation {aggregation!r} is not one of {sorted(AGGREGATIONS)}."
        )
    expected = {
        "count": (None,),
        "unique_count": DISTINCT_PROPERTIES,
    }.get(aggregation, NUMERIC_PROPERTIES)
    if quantity_property not in expected:
        raise ValueError(
            f"meter {meter_id}: {aggregation} needs quantity_property in {expected}, "
            f"not {quantity_property!r}."
        )
    return MeterDefinition(
        meter_id=meter_id,
        event_type=str(row["event_type"]),
        model=row.get("model") or None,
        property_filters=parse_property_filters(row.get("property_filters")),
        aggregation=aggregation,
        quantity_property=quantity_property,
    )

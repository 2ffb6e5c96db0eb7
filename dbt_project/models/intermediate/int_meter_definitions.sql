{#- The price book's meters with their property filters parsed: one list of accepted values
    per filterable property (null: no filter on it). `meter_matches_usage` reads these. -#}
with meters as (
    select * from {{ ref('price_book_meters') }}
),

clauses as (
    select
        meter_id,
        split_part(clause, '=', 1) as property,
        string_split(split_part(clause, '=', 2), '|') as accepted_values
    from meters, unnest(string_split(property_filters, ';')) as filters(clause)
    where property_filters is not null
)

select
    meters.meter_id,
    meters.event_type,
    meters.model,
    meters.property_filters,
    meters.aggregation,
    meters.quantity_property,
    meters.unit_label,
    meters.description,
    request_kind_filter.accepted_values as accepted_request_kinds,
    tool_filter.accepted_values as accepted_tools
from meters
left join clauses as request_kind_filter
    on meters.meter_id = request_kind_filter.meter_id
    and request_kind_filter.property = 'request_kind'
left join clauses as tool_filter
    on meters.meter_id = tool_filter.meter_id
    and tool_filter.property = 'tool'

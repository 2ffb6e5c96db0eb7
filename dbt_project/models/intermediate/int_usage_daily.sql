{#- Incremental by usage date: a run for arrival dates [min_date, max_date) rebuilds exactly the
    usage dates those arrivals touched (late events re-aggregate the day they occurred).

    One row per customer, usage date and combination of the properties meters filter on or count
    distinct values of (event type, model, request kind, tool), with every aggregate a meter
    can ask for: sum and max of each numeric property, and its value on the day's latest event
    (by occurred_at, then event_id, so ties resolve the same way on every run). -#}
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail',
        pre_hook="{% if is_incremental() %}delete from {{ this }} where usage_date in ({{ touched_usage_dates() }}){% endif %}"
    )
}}

with events as (
    select * from {{ ref('stg_usage__events') }}
    {% if is_incremental() %}
    where usage_date in ({{ touched_usage_dates() }})
    {% endif %}
),

aggregated as (
    select
        customer_id,
        usage_date,
        event_type,
        model,
        request_kind,
        tool,
        count(*) as event_count,
        sum(input_tokens) as input_tokens,
        sum(output_tokens) as output_tokens,
        sum(cache_read_tokens) as cache_read_tokens,
        sum(cost_minor) as cost_minor,
        max(input_tokens) as max_input_tokens,
        max(output_tokens) as max_output_tokens,
        max(cache_read_tokens) as max_cache_read_tokens,
        max(cost_minor) as max_cost_minor,
        arg_max(
            {
                'occurred_at': occurred_at,
                'event_id': event_id,
                'input_tokens': input_tokens,
                'output_tokens': output_tokens,
                'cache_read_tokens': cache_read_tokens,
                'cost_minor': cost_minor
            },
            (occurred_at, event_id)
        ) as latest_event
    from events
    group by customer_id, usage_date, event_type, model, request_kind, tool
)

select
    customer_id,
    usage_date,
    event_type,
    model,
    request_kind,
    tool,
    event_count,
    input_tokens,
    output_tokens,
    cache_read_tokens,
    cost_minor,
    max_input_tokens,
    max_output_tokens,
    max_cache_read_tokens,
    max_cost_minor,
    latest_event.occurred_at as latest_occurred_at,
    latest_event.event_id as latest_event_id,
    latest_event.input_tokens as latest_input_tokens,
    latest_event.output_tokens as latest_output_tokens,
    latest_event.cache_read_tokens as latest_cache_read_tokens,
    latest_event.cost_minor as latest_cost_minor
from aggregated

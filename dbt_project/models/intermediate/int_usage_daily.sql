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
        {%- for property in numeric_properties() %}
        sum({{ property }}) as {{ property }},
        {%- endfor %}
        {%- for property in numeric_properties() %}
        max({{ property }}) as max_{{ property }},
        {%- endfor %}
        arg_max(
            {
                'occurred_at': occurred_at,
                'event_id': event_id,
                {%- for property in numeric_properties() %}
                '{{ property }}': {{ property }}{{ ',' if not loop.last }}
                {%- endfor %}
            },
            (occurred_at, event_id)
        ) as latest_event
    from events
    group by customer_id, usage_date, event_type, model, request_kind, tool
)

select
    * exclude (latest_event),
    latest_event.occurred_at as latest_occurred_at,
    latest_event.event_id as latest_event_id,
    {%- for property in numeric_properties() %}
    latest_event.{{ property }} as latest_{{ property }}{{ ',' if not loop.last }}
    {%- endfor %}
from aggregated

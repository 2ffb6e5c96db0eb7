{#- How late each meter's events arrive: per usage date and meter, the events the meter reads
    (int_meter_definitions: event type, model, property filters) and their lag from occurred_at
    to received_at, in seconds. Percentiles are approximate (t-digest); the maximum is exact.

    Events are matched to the distinct event selections of the meters (a model's token meters
    all read its calls: one selection), then each selection's figures go to its meters, so an
    event is aggregated about once, not once per meter that reads it. Incremental like
    int_usage_daily: a run rebuilds the usage dates its arrivals touched (a changed meter
    definition needs `--full-refresh` of this model). -#}
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail',
        pre_hook="{% if is_incremental() %}delete from {{ this }} where usage_date in ({{ touched_usage_dates() }}){% endif %}"
    )
}}

with meters as (
    select * from {{ ref('int_meter_definitions') }}
),

selections as (
    select distinct event_type, model, accepted_request_kinds, accepted_tools
    from meters
),

events as (
    select
        usage_date,
        event_type,
        model,
        request_kind,
        tool,
        epoch(received_at) - epoch(occurred_at) as lag_seconds
    from {{ ref('stg_usage__events') }}
    {% if is_incremental() %}
    where usage_date in ({{ touched_usage_dates() }})
    {% endif %}
),

per_selection as (
    select
        events.usage_date,
        selections.event_type,
        selections.model,
        selections.accepted_request_kinds,
        selections.accepted_tools,
        count(*) as events,
        approx_quantile(events.lag_seconds, 0.5) as received_lag_p50_seconds,
        approx_quantile(events.lag_seconds, 0.95) as received_lag_p95_seconds,
        approx_quantile(events.lag_seconds, 0.99) as received_lag_p99_seconds,
        max(events.lag_seconds) as received_lag_max_seconds
    from events
    inner join selections
        on {{ meter_matches_usage('selections', 'events') }}
    group by all
)

select
    per_selection.usage_date,
    meters.meter_id,
    per_selection.events,
    per_selection.received_lag_p50_seconds,
    per_selection.received_lag_p95_seconds,
    per_selection.received_lag_p99_seconds,
    per_selection.received_lag_max_seconds
from per_selection
inner join meters
    on meters.event_type = per_selection.event_type
    and meters.model is not distinct from per_selection.model
    and meters.accepted_request_kinds is not distinct from per_selection.accepted_request_kinds
    and meters.accepted_tools is not distinct from per_selection.accepted_tools

{#- How late events arrive: per usage date and model, the lag from occurred_at to received_at.
    Incremental like int_usage_daily (a run rebuilds the usage dates its arrivals touched).
    Percentiles are approximate (t-digest); the maximum is exact. -#}
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook="{% if is_incremental() %}delete from {{ this }} where usage_date in ({{ touched_usage_dates() }}){% endif %}"
    )
}}

with events as (
    select
        usage_date,
        model,
        epoch(received_at) - epoch(occurred_at) as lag_seconds
    from {{ ref('stg_usage__events') }}
    {% if is_incremental() %}
    where usage_date in ({{ touched_usage_dates() }})
    {% endif %}
)

select
    usage_date,
    model,
    count(*) as events,
    approx_quantile(lag_seconds, 0.5) as received_lag_p50_seconds,
    approx_quantile(lag_seconds, 0.95) as received_lag_p95_seconds,
    approx_quantile(lag_seconds, 0.99) as received_lag_p99_seconds,
    max(lag_seconds) as received_lag_max_seconds
from events
group by usage_date, model

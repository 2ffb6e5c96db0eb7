{#- Incremental by usage date: a run for arrival dates [min_date, max_date) rebuilds exactly the
    usage dates those arrivals touched (late events re-aggregate the day they occurred). -#}
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
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
        count(*) as event_count,
        sum(input_tokens) as input_tokens,
        sum(output_tokens) as output_tokens,
        sum(cache_read_tokens) as cache_read_tokens,
        sum(cost_minor) as cost_minor
    from events
    group by customer_id, usage_date, event_type, model
)

select * from aggregated

{{ config(materialized='view') }}
{#- The metering lag of a whole usage date, as the lag check's table and the finance report show
    it: each event counted once (metering_lag_daily counts an event for every meter that reads
    it), slots summed, and the slowest meter's p95 and max. A view: always what
    metering_lag_daily and int_usage_daily hold now. -#}
with events_per_day as (
    select usage_date, sum(event_count) as events
    from {{ ref('int_usage_daily') }}
    group by usage_date
),

lag_per_day as (
    select
        usage_date,
        sum(slots) as slots,
        sum(slots_sent) as slots_sent,
        max(received_lag_p95_seconds) as slowest_meter_received_lag_p95_seconds,
        max(received_lag_max_seconds) as received_lag_max_seconds,
        max(billed_lag_p95_seconds) as slowest_meter_billed_lag_p95_seconds,
        max(billed_lag_max_seconds) as billed_lag_max_seconds,
        max(sent_lag_p95_seconds) as slowest_meter_sent_lag_p95_seconds,
        max(sent_lag_max_seconds) as sent_lag_max_seconds
    from {{ ref('metering_lag_daily') }}
    group by usage_date
)

select
    lag_per_day.usage_date,
    coalesce(events_per_day.events, 0) as events,
    lag_per_day.* exclude (usage_date)
from lag_per_day
left join events_per_day on lag_per_day.usage_date = events_per_day.usage_date

{#- Maps aggregated events onto the price book's meters: one quantity per customer, meter and
    usage date.

    A meter aggregates its events over the billing period to date (docs/pricing.md, Meters),
    the customer's period as their billing-cycle anchor sets it (int_customer_billing_cycles);
    `quantity_units` is what the day adds to that period-to-date quantity. For `count` and `sum`
    that is the day's own count or sum; for `max`, `latest` and `unique_count` it is the change
    of the period's maximum, latest value or number of distinct values. So, for every meter,
    the period's quantity through a day is the running sum of `quantity_units`, which is all the
    rating, the ledger and Stripe's `sum` meters rely on. The change can be negative (a latest
    value that went down), and a late event can move it between days (a value seen earlier);
    `day_units` is the aggregate over the day's events alone. -#}
with usage_daily as (
    select * from {{ ref('int_usage_daily') }}
),

meters as (
    select * from {{ ref('int_meter_definitions') }}
),

billing_cycles as (
    select * from {{ ref('int_customer_billing_cycles') }}
),

matched as (
    select
        usage_daily.customer_id,
        meters.meter_id,
        meters.aggregation,
        meters.model,
        usage_daily.usage_date,
        {{ billing_period_start('usage_daily.usage_date', 'coalesce(billing_cycles.billing_anchor_day, 1)') }}
            as billing_period_start_date,
        usage_daily.event_count,
        cast({{ usage_property_value('meters', 'usage_daily') }} as hugeint) as property_value,
        case meters.quantity_property
            when 'model' then usage_daily.model
            when 'request_kind' then usage_daily.request_kind
            when 'tool' then usage_daily.tool
        end as distinct_value,
        usage_daily.latest_occurred_at,
        usage_daily.latest_event_id
    from usage_daily
    inner join meters
        on {{ meter_matches_usage('meters', 'usage_daily') }}
    left join billing_cycles on usage_daily.customer_id = billing_cycles.customer_id
),

per_day as (
    select
        customer_id,
        meter_id,
        aggregation,
        model,
        usage_date,
        billing_period_start_date,
        sum(event_count) as event_count,
        case aggregation
            when 'max' then max(property_value)
            when 'latest' then arg_max(property_value, (latest_occurred_at, latest_event_id))
            when 'unique_count' then count(distinct distinct_value)
            else sum(property_value)
        end as day_units
    from matched
    group by customer_id, meter_id, aggregation, model, usage_date, billing_period_start_date
),

{#- unique_count: the values a period had not seen before, by the day each first appeared. -#}
first_seen as (
    select customer_id, meter_id, billing_period_start_date, distinct_value,
        min(usage_date) as first_seen_date
    from matched
    where aggregation = 'unique_count' and distinct_value is not null
    group by customer_id, meter_id, billing_period_start_date, distinct_value
),

new_values as (
    select customer_id, meter_id, first_seen_date as usage_date, count(*) as new_value_count
    from first_seen
    group by customer_id, meter_id, first_seen_date
),

period_to_date as (
    select
        per_day.*,
        case per_day.aggregation
            when 'max' then max(per_day.day_units) over period_so_far
            when 'latest' then per_day.day_units
            when 'unique_count' then sum(coalesce(new_values.new_value_count, 0)) over period_so_far
            else sum(per_day.day_units) over period_so_far
        end as period_to_date_units
    from per_day
    left join new_values
        on per_day.customer_id = new_values.customer_id
        and per_day.meter_id = new_values.meter_id
        and per_day.usage_date = new_values.usage_date
    window period_so_far as (
        partition by per_day.customer_id, per_day.meter_id, per_day.billing_period_start_date
        order by per_day.usage_date
        rows between unbounded preceding and current row
    )
)

select
    customer_id,
    meter_id,
    usage_date,
    billing_period_start_date,
    model,
    event_count,
    cast(
        period_to_date_units - coalesce(
            lag(period_to_date_units) over (
                partition by customer_id, meter_id, billing_period_start_date
                order by usage_date
            ),
            0
        ) as hugeint
    ) as quantity_units,
    cast(day_units as hugeint) as day_units
from period_to_date

{#- The usage lines of each customer's invoice for a billing period (calendar month, UTC).
    This is the one place where exact amounts are rounded to whole minor units. -#}
with billable as (
    select * from {{ ref('billable_usage_daily') }}
    where is_priced
),

summed as (
    select
        customer_id,
        billing_period_start_date,
        meter_id,
        currency,
        sum(quantity_units) as quantity_units,
        sum(amount_minor_exact) as amount_minor_exact,
        count(*) as billed_days
    from billable
    group by customer_id, billing_period_start_date, meter_id, currency
),

final as (
    select
        customer_id,
        billing_period_start_date,
        cast({{ dbt.dateadd('month', 1, 'billing_period_start_date') }} as date)
            as billing_period_end_date,
        meter_id,
        currency,
        quantity_units,
        amount_minor_exact,
        {{ round_to_minor_units('amount_minor_exact') }} as amount_minor,
        cast(
            {{ round_to_minor_units('amount_minor_exact') }} - amount_minor_exact
            as {{ money_type() }}
        ) as rounding_minor,
        billed_days
    from summed
)

select * from final

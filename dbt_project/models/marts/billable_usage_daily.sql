{#- Rates each customer's daily meter quantity at their plan's unit price in force that day.
    Amounts stay exact (sub-cent); rounding happens once, in invoice_lines. -#}
with meter_usage as (
    select * from {{ ref('int_meter_usage_daily') }}
),

plan_days as (
    select * from {{ ref('int_customer_plan_days') }}
),

prices as (
    select * from {{ ref('price_book_meter_prices') }}
),

usage_with_plan as (
    select
        meter_usage.*,
        plan_days.plan_id,
        plan_days.subscription_id
    from meter_usage
    left join plan_days
        on meter_usage.customer_id = plan_days.customer_id
        and meter_usage.usage_date >= plan_days.valid_from_date
        and meter_usage.usage_date < plan_days.valid_to_date
),

prices_in_force as (
    select
        usage_with_plan.customer_id,
        usage_with_plan.meter_id,
        usage_with_plan.usage_date,
        prices.unit_price_minor,
        prices.currency,
        row_number() over (
            partition by usage_with_plan.customer_id, usage_with_plan.meter_id,
                usage_with_plan.usage_date
            order by prices.effective_from desc
        ) as price_rank
    from usage_with_plan
    inner join prices
        on usage_with_plan.plan_id = prices.plan_id
        and usage_with_plan.meter_id = prices.meter_id
        and prices.effective_from <= usage_with_plan.usage_date
),

rated as (
    select
        usage_with_plan.customer_id,
        usage_with_plan.meter_id,
        usage_with_plan.usage_date,
        usage_with_plan.model,
        usage_with_plan.plan_id,
        usage_with_plan.subscription_id,
        usage_with_plan.quantity_units,
        prices_in_force.unit_price_minor,
        cast(
            cast(usage_with_plan.quantity_units as decimal(38, 0))
            * prices_in_force.unit_price_minor
            as {{ money_type() }}
        ) as amount_minor_exact,
        prices_in_force.currency,
        prices_in_force.unit_price_minor is not null as is_priced,
        cast({{ dbt.date_trunc('month', 'usage_with_plan.usage_date') }} as date)
            as billing_period_start_date
    from usage_with_plan
    left join prices_in_force
        on usage_with_plan.customer_id = prices_in_force.customer_id
        and usage_with_plan.meter_id = prices_in_force.meter_id
        and usage_with_plan.usage_date = prices_in_force.usage_date
        and prices_in_force.price_rank = 1
)

select * from rated

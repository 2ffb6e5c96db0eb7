{#- The minimum spend of each plan a customer was subscribed to in a billing period (the
    customer's, customer_billing_periods), against the usage rated on that plan in the period,
    and the top-up that brings the usage to the minimum. Periods are those the warehouse has
    rated usage for; a subscribed
    customer without usage in such a period owes the whole minimum. A positive top-up is a line of invoice_lines; it is
    not in the ledger or at Stripe yet (docs/pricing.md, Not built yet). -#}
with billable as (
    select * from {{ ref('billable_usage_daily') }}
    where is_priced
),

plan_days as (
    select * from {{ ref('int_customer_plan_days') }}
),

plans as (
    select * from {{ ref('price_book_plans') }}
    where minimum_spend_minor > 0
),

periods as (
    select * from {{ ref('customer_billing_periods') }}
),

subscribed as (
    select distinct
        plan_days.customer_id,
        plan_days.plan_id,
        periods.billing_period_start_date
    from plan_days
    inner join periods
        on plan_days.customer_id = periods.customer_id
        and plan_days.valid_from_date < periods.billing_period_end_date
        and plan_days.valid_to_date > periods.billing_period_start_date
),

usage_amounts as (
    select
        customer_id,
        plan_id,
        billing_period_start_date,
        sum(amount_minor_exact) as usage_amount_minor_exact
    from billable
    group by customer_id, plan_id, billing_period_start_date
),

final as (
    select
        subscribed.customer_id,
        subscribed.billing_period_start_date,
        subscribed.plan_id,
        plans.currency,
        cast(plans.minimum_spend_minor as {{ money_type() }}) as minimum_spend_minor,
        cast(coalesce(usage_amounts.usage_amount_minor_exact, 0) as {{ money_type() }})
            as usage_amount_minor_exact,
        cast(
            greatest(
                plans.minimum_spend_minor
                - coalesce(usage_amounts.usage_amount_minor_exact, 0),
                0
            )
            as {{ money_type() }}
        ) as top_up_minor_exact
    from subscribed
    inner join plans
        on subscribed.plan_id = plans.plan_id
    left join usage_amounts
        on subscribed.customer_id = usage_amounts.customer_id
        and subscribed.plan_id = usage_amounts.plan_id
        and subscribed.billing_period_start_date = usage_amounts.billing_period_start_date
)

select * from final

{#- Each customer's invoice for a billing period (theirs: customer_billing_periods), one row
    per charge:
    - `usage`: one per meter, the period's rated usage (line_id = meter_id);
    - `flat_fee`, `proration_charge`, `proration_credit`: the plan's flat fee and its
      prorations, from subscription_fee_lines (line_id = subscription_id);
    - `minimum_top_up`: what lifts the period's usage on a plan to its minimum spend, from
      minimum_spend_period (line_id = plan_id).
    Fee lines cover the periods the warehouse rates (those overlapping the rated days).
    This is the one place where exact amounts are rounded to whole minor units, each line on
    its own (round_to_minor_units, half away from zero). Credits drawn down by usage are not
    lines here: they are allocated after the ledger step, see invoice_credits. -#}
with billable as (
    select * from {{ ref('billable_usage_daily') }}
    where is_priced
),

periods as (
    select * from {{ ref('customer_billing_periods') }}
),

usage_lines as (
    select
        customer_id,
        billing_period_start_date,
        'usage' as line_type,
        meter_id as line_id,
        meter_id,
        cast(null as varchar) as subscription_id,
        cast(null as varchar) as plan_id,
        currency,
        sum(quantity_units) as quantity_units,
        cast(null as {{ money_type() }}) as unit_amount_minor,
        sum(amount_minor_exact) as amount_minor_exact,
        count(*) as billed_days
    from billable
    group by customer_id, billing_period_start_date, meter_id, currency
),

fee_lines as (
    select
        fees.customer_id,
        fees.billing_period_start_date,
        fees.line_type,
        fees.subscription_id as line_id,
        cast(null as varchar) as meter_id,
        fees.subscription_id,
        fees.plan_id,
        fees.currency,
        fees.quantity_seconds as quantity_units,
        cast(fees.unit_amount_minor as {{ money_type() }}) as unit_amount_minor,
        fees.amount_minor_exact,
        cast(null as bigint) as billed_days
    from {{ ref('subscription_fee_lines') }} as fees
    inner join periods
        on fees.customer_id = periods.customer_id
        and fees.billing_period_start_date = periods.billing_period_start_date
),

minimum_lines as (
    select
        customer_id,
        billing_period_start_date,
        'minimum_top_up' as line_type,
        plan_id as line_id,
        cast(null as varchar) as meter_id,
        cast(null as varchar) as subscription_id,
        plan_id,
        currency,
        cast(null as bigint) as quantity_units,
        cast(minimum_spend_minor as {{ money_type() }}) as unit_amount_minor,
        top_up_minor_exact as amount_minor_exact,
        cast(null as bigint) as billed_days
    from {{ ref('minimum_spend_period') }}
    where top_up_minor_exact > 0
),

lines as (
    select * from usage_lines
    union all
    select * from fee_lines
    union all
    select * from minimum_lines
),

final as (
    select
        lines.customer_id,
        lines.billing_period_start_date,
        periods.billing_period_end_date,
        line_type,
        line_id,
        meter_id,
        subscription_id,
        plan_id,
        currency,
        quantity_units,
        unit_amount_minor,
        cast(amount_minor_exact as {{ money_type() }}) as amount_minor_exact,
        {{ round_to_minor_units('amount_minor_exact') }} as amount_minor,
        cast(
            {{ round_to_minor_units('amount_minor_exact') }} - amount_minor_exact
            as {{ money_type() }}
        ) as rounding_minor,
        billed_days
    from lines
    left join periods
        on lines.customer_id = periods.customer_id
        and lines.billing_period_start_date = periods.billing_period_start_date
)

select * from final

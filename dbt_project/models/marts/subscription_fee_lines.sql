{#- The flat-fee lines of each subscription's billing periods, prorated to the second like Stripe.

    - `flat_fee`: the plan's monthly fee, billed in advance for a period the fee runs at the start
      of (not in a trial, not ended).
    - `proration_charge`: the remaining time of a period on a fee that starts inside it (a new
      or changed plan, a trial's end): fee x (period end - start) / period length.
    - `proration_credit`: the unused time of a period on a fee that ends inside it by a plan
      change (or a cancellation when `prorate_cancellations` is on): -fee x (period end - end)
      / period length. A cancellation without proration keeps the advance fee.
    Each line is rounded on its own to whole minor units with round_to_minor_units (Stripe
    invoices each proration as its own item); the exact amount, to 12 places, stays beside it.
    The Python reference is pricing/prorations.py; docs/pricing.md works an example. -#}
with periods as (
    select * from {{ ref('int_subscription_fee_periods') }}
    where monthly_fee_minor > 0
),

timed as (
    select
        *,
        {{ dbt.datediff('billing_period_start_at', 'billing_period_end_at', 'second') }}
            as period_seconds
    from periods
),

flat_fees as (
    select
        *,
        'flat_fee' as line_type,
        billing_period_start_at as line_starts_at,
        period_seconds as quantity_seconds
    from timed
    where fee_starts_at <= billing_period_start_at
),

proration_charges as (
    select
        *,
        'proration_charge' as line_type,
        fee_starts_at as line_starts_at,
        {{ dbt.datediff('fee_starts_at', 'billing_period_end_at', 'second') }} as quantity_seconds
    from timed
    where fee_starts_at > billing_period_start_at
        and fee_starts_at < billing_period_end_at
),

proration_credits as (
    select
        *,
        'proration_credit' as line_type,
        ended_at as line_starts_at,
        {{ dbt.datediff('ended_at', 'billing_period_end_at', 'second') }} as quantity_seconds
    from timed
    where is_prorated_end
        and ended_at > billing_period_start_at
        and ended_at < billing_period_end_at
),

lines as (
    select * from flat_fees
    union all
    select * from proration_charges
    union all
    select * from proration_credits
),

amounts as (
    select
        *,
        case when line_type = 'proration_credit' then -1 else 1 end
        * {{ prorated_minor_exact('monthly_fee_minor', 'quantity_seconds', 'period_seconds') }}
            as amount_minor_exact
    from lines
),

final as (
    select
        customer_id,
        subscription_id,
        billing_period_start_date,
        billing_period_start_at,
        billing_period_end_at,
        line_type,
        plan_id,
        currency,
        line_starts_at,
        billing_period_end_at as line_ends_at,
        quantity_seconds,
        period_seconds,
        monthly_fee_minor as unit_amount_minor,
        cast(amount_minor_exact as {{ money_type() }}) as amount_minor_exact,
        {{ round_to_minor_units('amount_minor_exact') }} as amount_minor,
        cast(
            {{ round_to_minor_units('amount_minor_exact') }} - amount_minor_exact
            as {{ money_type() }}
        ) as rounding_minor,
        successor_subscription_id
    from amounts
)

select * from final

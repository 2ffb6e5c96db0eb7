{{ config(tags=["stripe_reconciliation"]) }}
{#- Per customer, meter and usage date: what Meterbook rated, what the ledger accrued and what
    Stripe's meter counted, with the amount Stripe's count is worth. Only slots that Meterbook
    rated or Stripe counted appear.

    Stripe prices a period's total under a price that mirrors the charge (docs/pricing.md, What
    Stripe receives), so Stripe's day is valued as the rating values a day: the charge in force
    on the day applied to Stripe's period-to-date count through the day, minus through the day
    before (charge_valuation, the rating's own arithmetic). Its days add up to what Stripe's
    invoice charges for the period. A percentage charge, which no Stripe price expresses, is
    worth the rated amount when the counts agree and is left unvalued (null) when they differ;
    so is a day Meterbook did not rate (no charge to value it with). -#}
with rated as (
    select
        billable.customer_id,
        billable.meter_id,
        billable.usage_date,
        billable.currency,
        billable.quantity_units,
        billable.amount_minor_exact,
        billable.plan_id,
        billable.charge_effective_from,
        billable.charge_model,
        billable.included_units,
        charges.unit_price_minor,
        charges.package_size_units,
        charges.package_price_minor,
        charges.percentage_rate,
        charges.fixed_fee_minor
    from {{ ref('billable_usage_daily') }} as billable
    inner join {{ ref('price_book_charges') }} as charges
        on billable.plan_id = charges.plan_id
        and billable.meter_id = charges.meter_id
        and billable.charge_effective_from = charges.effective_from
    where billable.is_priced
),

accrued as (
    select * from {{ ref('int_ledger_usage_accruals_daily') }}
),

metered as (
    select * from {{ ref('stg_stripe_sync__meter_usage_daily') }}
),

joined as (
    select
        coalesce(rated.customer_id, metered.customer_id) as customer_id,
        coalesce(rated.meter_id, metered.meter_id) as meter_id,
        coalesce(rated.usage_date, metered.usage_date) as usage_date,
        {{ billing_period_start('coalesce(rated.usage_date, metered.usage_date)', 'coalesce(billing_cycles.billing_anchor_day, 1)') }}
            as billing_period_start_date,
        rated.customer_id is not null as is_rated,
        rated.currency,
        rated.plan_id,
        rated.charge_effective_from,
        rated.charge_model,
        rated.included_units,
        rated.unit_price_minor,
        rated.package_size_units,
        rated.package_price_minor,
        rated.percentage_rate,
        rated.fixed_fee_minor,
        coalesce(rated.quantity_units, 0) as rated_quantity,
        coalesce(metered.stripe_quantity, 0) as stripe_quantity,
        coalesce(rated.amount_minor_exact, 0) as rated_amount_minor_exact,
        coalesce(accrued.accrued_minor, 0) as ledger_amount_minor_exact
    from rated
    full outer join metered
        on rated.customer_id = metered.customer_id
        and rated.meter_id = metered.meter_id
        and rated.usage_date = metered.usage_date
    left join accrued
        on coalesce(rated.customer_id, metered.customer_id) = accrued.customer_id
        and coalesce(rated.meter_id, metered.meter_id) = accrued.meter_id
        and coalesce(rated.usage_date, metered.usage_date) = accrued.usage_date
    left join {{ ref('int_customer_billing_cycles') }} as billing_cycles
        on coalesce(rated.customer_id, metered.customer_id) = billing_cycles.customer_id
),

stripe_positioned as (
    {#- Stripe's billable count through the day and through the day before (allowance
        deducted), as billable_usage_daily positions the rated usage. -#}
    select
        *,
        greatest(stripe_period_to_date_units - included_units, 0) as stripe_billable_units,
        greatest(stripe_period_to_date_units - stripe_quantity - included_units, 0)
            as stripe_prior_billable_units,
        0 as no_events
    from (
        select
            *,
            sum(stripe_quantity) over (
                partition by customer_id, meter_id, billing_period_start_date
                order by usage_date
                rows between unbounded preceding and current row
            ) as stripe_period_to_date_units
        from joined
    )
),

{{ charge_valuation('stripe_positioned', [
    ('stripe_billable_units', 'no_events', 'stripe_to_date_minor_exact'),
    ('stripe_prior_billable_units', 'no_events', 'stripe_prior_to_date_minor_exact'),
], prefix='stripe_') }},

valued as (
    select
        customer_id,
        meter_id,
        usage_date,
        billing_period_start_date,
        is_rated,
        currency,
        charge_model,
        -- A price per unit where one exists: a per-unit charge without an allowance.
        case
            when charge_model = 'per_unit' and included_units = 0 then unit_price_minor
        end as unit_price_minor,
        rated_quantity,
        stripe_quantity,
        rated_amount_minor_exact,
        ledger_amount_minor_exact,
        stripe_quantity - rated_quantity as stripe_difference_quantity,
        cast(
            case
                when charge_model = 'percentage' then
                    case when stripe_quantity = rated_quantity then rated_amount_minor_exact end
                else stripe_to_date_minor_exact - stripe_prior_to_date_minor_exact
            end
            as {{ money_type() }}
        ) as stripe_amount_minor_exact
    from stripe_valued
)

select
    *,
    cast(stripe_amount_minor_exact - rated_amount_minor_exact as {{ money_type() }})
        as stripe_difference_minor_exact,
    cast(ledger_amount_minor_exact - rated_amount_minor_exact as {{ money_type() }})
        as ledger_difference_minor_exact,
    case
        when not is_rated then 'usage_not_rated'
        when ledger_amount_minor_exact <> rated_amount_minor_exact then 'ledger_differs'
        when stripe_quantity < rated_quantity then 'missing_usage'
        when stripe_quantity > rated_quantity then 'extra_usage'
        else 'ok'
    end as status
from valued

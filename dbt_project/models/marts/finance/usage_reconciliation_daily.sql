{#- Per customer, meter and usage date: what Meterbook rated, what the ledger accrued and what
    Stripe's meter counted, with the amount Stripe's count is worth at the slot's price. Only
    slots that Meterbook rated or Stripe counted appear. -#}
with rated as (
    select customer_id, meter_id, usage_date, billing_period_start_date, currency,
        quantity_units, unit_price_minor, amount_minor_exact
    from {{ ref('billable_usage_daily') }}
    where is_priced
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
        cast(
            {{ dbt.date_trunc('month', 'coalesce(rated.usage_date, metered.usage_date)') }} as date
        ) as billing_period_start_date,
        rated.currency,
        rated.unit_price_minor,
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
),

valued as (
    select
        *,
        stripe_quantity - rated_quantity as stripe_difference_quantity,
        cast(
            cast(stripe_quantity as decimal(38, 0)) * unit_price_minor as {{ money_type() }}
        ) as stripe_amount_minor_exact
    from joined
)

select
    *,
    cast(stripe_amount_minor_exact - rated_amount_minor_exact as {{ money_type() }})
        as stripe_difference_minor_exact,
    cast(ledger_amount_minor_exact - rated_amount_minor_exact as {{ money_type() }})
        as ledger_difference_minor_exact,
    case
        when unit_price_minor is null then 'usage_not_rated'
        when ledger_amount_minor_exact <> rated_amount_minor_exact then 'ledger_differs'
        when stripe_quantity < rated_quantity then 'missing_usage'
        when stripe_quantity > rated_quantity then 'extra_usage'
        else 'ok'
    end as status
from valued

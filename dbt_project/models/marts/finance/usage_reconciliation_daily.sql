{#- Per customer, meter and usage date: what Meterbook rated, what the ledger accrued and what
    Stripe's meter counted, with the amount Stripe's count is worth at the slot's price. Only
    slots that Meterbook rated or Stripe counted appear.

    Stripe's count is valued day by day only where the price is linear (a per-unit charge
    without an allowance): a tiered, package, percentage or allowance charge prices the period
    to date, so its day is worth the rated amount when the counts agree and is left unvalued
    (null) when they differ; the quantity difference still sets the status. -#}
with rated as (
    select customer_id, meter_id, usage_date, billing_period_start_date, currency,
        quantity_units, amount_minor_exact,
        case
            when charge_model = 'per_unit' and included_units = 0 then unit_price_minor
        end as unit_price_minor
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
        rated.customer_id is not null as is_rated,
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
            case
                when unit_price_minor is not null
                    then cast(stripe_quantity as decimal(38, 0)) * unit_price_minor
                when stripe_quantity = rated_quantity then rated_amount_minor_exact
            end
            as {{ money_type() }}
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
        when not is_rated then 'usage_not_rated'
        when ledger_amount_minor_exact <> rated_amount_minor_exact then 'ledger_differs'
        when stripe_quantity < rated_quantity then 'missing_usage'
        when stripe_quantity > rated_quantity then 'extra_usage'
        else 'ok'
    end as status
from valued

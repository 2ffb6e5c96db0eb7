{#- Every billed slot checked across the three places it must agree: rated (dbt), accrued
    (ledger) and metered (Stripe, through the outbox). One row per customer, meter and usage
    date that any of them knows. -#}
with rated as (
    select customer_id, meter_id, usage_date, currency, amount_minor_exact, quantity_units
    from {{ ref('billable_usage_daily') }}
    where is_priced
),

accrued as (
    select * from {{ ref('int_ledger_usage_accruals_daily') }}
),

metered as (
    select * from {{ ref('stg_stripe_sync__outbox_slots') }}
),

joined as (
    select
        coalesce(rated.customer_id, accrued.customer_id, metered.customer_id) as customer_id,
        coalesce(rated.meter_id, accrued.meter_id, metered.meter_id) as meter_id,
        coalesce(rated.usage_date, accrued.usage_date, metered.usage_date) as usage_date,
        coalesce(rated.currency, accrued.currency) as currency,
        coalesce(rated.amount_minor_exact, 0) as rated_amount_minor,
        coalesce(accrued.accrued_minor, 0) as ledger_accrued_minor,
        coalesce(rated.quantity_units, 0) as rated_quantity,
        coalesce(metered.quantity_sent, 0) as stripe_sent_quantity,
        coalesce(metered.quantity_pending, 0) as stripe_pending_quantity,
        coalesce(metered.quantity_dead, 0) as stripe_dead_quantity
    from rated
    full outer join accrued
        on rated.customer_id = accrued.customer_id
        and rated.meter_id = accrued.meter_id
        and rated.usage_date = accrued.usage_date
    full outer join metered
        on coalesce(rated.customer_id, accrued.customer_id) = metered.customer_id
        and coalesce(rated.meter_id, accrued.meter_id) = metered.meter_id
        and coalesce(rated.usage_date, accrued.usage_date) = metered.usage_date
)

select
    *,
    ledger_accrued_minor - rated_amount_minor as ledger_difference_minor,
    stripe_sent_quantity + stripe_pending_quantity + stripe_dead_quantity - rated_quantity
        as stripe_difference_quantity,
    case
        when ledger_accrued_minor <> rated_amount_minor then 'ledger_differs'
        when stripe_dead_quantity > 0 then 'stripe_dead_letter'
        when stripe_sent_quantity + stripe_pending_quantity <> rated_quantity then 'stripe_differs'
        when stripe_pending_quantity > 0 then 'stripe_pending'
        else 'ok'
    end as status
from joined

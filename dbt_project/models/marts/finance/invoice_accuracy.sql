{{ config(tags=["stripe_reconciliation"]) }}
{#- Per billing period and currency: how many customer invoices Stripe will charge exactly what
    Meterbook computed. An invoice matches when every one of its usage charges matches to the
    minor unit (no tolerance: both sides apply the same rounding rule once per line). -#}
with charges as (
    select * from {{ ref('int_invoice_reconciliation') }}
),

invoices as (
    select
        customer_id,
        billing_period_start_date,
        currency,
        sum(meterbook_amount_minor) as meterbook_amount_minor,
        sum(stripe_amount_minor) as stripe_amount_minor,
        sum(abs(stripe_difference_minor)) as abs_difference_minor,
        -- Revenue Meterbook computed that Stripe will not collect (under-counted usage).
        sum(greatest(meterbook_amount_minor - stripe_amount_minor, 0)) as under_billed_minor,
        bool_and(status = 'ok') as is_exact
    from charges
    group by customer_id, billing_period_start_date, currency
)

select
    billing_period_start_date,
    currency,
    count(*) as invoices_compared,
    count(*) filter (where is_exact) as invoices_matching,
    -- A share, not money: six places (counts of any size; 1,999 of 2,000 is 0.999500).
    cast(
        cast(count(*) filter (where is_exact) as decimal(18, 6)) / count(*) as decimal(9, 6)
    ) as matching_share,
    sum(meterbook_amount_minor) as meterbook_amount_minor,
    sum(stripe_amount_minor) as stripe_amount_minor,
    sum(abs_difference_minor) as total_abs_difference_minor,
    max(abs_difference_minor) as largest_difference_minor,
    sum(under_billed_minor) as revenue_at_risk_minor
from invoices
group by billing_period_start_date, currency

{{ config(tags=["stripe_reconciliation"]) }}
{#- Every usage charge of every customer's invoice for a period, compared three ways:
    Meterbook's invoice line, the ledger's accruals and Stripe's meter counts, each rounded to
    whole minor units by the one rule (half away from zero, once per line). -#}
with lines as (
    select * from {{ ref('invoice_lines') }}
    where line_type = 'usage'
),

daily as (
    select * from {{ ref('usage_reconciliation_daily') }}
),

by_charge as (
    select
        customer_id,
        billing_period_start_date,
        meter_id,
        max(currency) as currency,
        sum(rated_quantity) as rated_quantity,
        sum(stripe_quantity) as stripe_quantity,
        sum(stripe_amount_minor_exact) as stripe_amount_minor_exact,
        sum(ledger_amount_minor_exact) as ledger_amount_minor_exact,
        count(*) filter (where status = 'missing_usage') as days_missing_usage,
        count(*) filter (where status = 'extra_usage') as days_extra_usage,
        count(*) filter (where status = 'ledger_differs') as days_ledger_differs,
        count(*) filter (where status = 'usage_not_rated') as days_not_rated,
        string_agg(
            cast(usage_date as varchar) || ' (' || cast(stripe_difference_quantity as varchar)
                || ')',
            ', ' order by usage_date
        ) filter (where stripe_difference_quantity <> 0) as days_stripe_differs
    from daily
    group by customer_id, billing_period_start_date, meter_id
),

compared as (
    select
        coalesce(lines.customer_id, by_charge.customer_id) as customer_id,
        coalesce(lines.billing_period_start_date, by_charge.billing_period_start_date)
            as billing_period_start_date,
        coalesce(lines.meter_id, by_charge.meter_id) as meter_id,
        coalesce(lines.currency, by_charge.currency) as currency,
        coalesce(lines.amount_minor, 0) as meterbook_amount_minor,
        {{ round_to_minor_units('coalesce(by_charge.stripe_amount_minor_exact, 0)') }}
            as stripe_amount_minor,
        {{ round_to_minor_units('coalesce(by_charge.ledger_amount_minor_exact, 0)') }}
            as ledger_amount_minor,
        coalesce(lines.quantity_units, 0) as meterbook_quantity,
        coalesce(by_charge.stripe_quantity, 0) as stripe_quantity,
        coalesce(by_charge.days_missing_usage, 0) as days_missing_usage,
        coalesce(by_charge.days_extra_usage, 0) as days_extra_usage,
        coalesce(by_charge.days_ledger_differs, 0) as days_ledger_differs,
        coalesce(by_charge.days_not_rated, 0) as days_not_rated,
        by_charge.days_stripe_differs
    from lines
    full outer join by_charge
        on lines.customer_id = by_charge.customer_id
        and lines.billing_period_start_date = by_charge.billing_period_start_date
        and lines.meter_id = by_charge.meter_id
)

select
    *,
    stripe_amount_minor - meterbook_amount_minor as stripe_difference_minor,
    ledger_amount_minor - meterbook_amount_minor as ledger_difference_minor,
    case
        when days_ledger_differs > 0 or ledger_amount_minor <> meterbook_amount_minor
            then 'ledger_differs'
        when days_not_rated > 0 then 'usage_not_rated'
        when days_missing_usage > 0 and days_extra_usage > 0 then 'missing_and_extra_usage'
        when days_missing_usage > 0 then 'missing_usage'
        when days_extra_usage > 0 then 'extra_usage'
        when stripe_amount_minor <> meterbook_amount_minor then 'rounding'
        else 'ok'
    end as status
from compared

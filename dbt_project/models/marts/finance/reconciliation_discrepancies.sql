{{ config(tags=["stripe_reconciliation"]) }}
{#- Finance's worklist: the invoice usage charges (customer, period, meter) where Stripe or the
    ledger does not match Meterbook to the minor unit, with the days that differ and the likely
    cause. Empty when everything reconciles. -#}
select
    customer_id,
    billing_period_start_date,
    meter_id,
    currency,
    meterbook_amount_minor,
    stripe_amount_minor,
    ledger_amount_minor,
    stripe_difference_minor,
    ledger_difference_minor,
    meterbook_quantity,
    stripe_quantity,
    days_stripe_differs,
    status as likely_cause,
    status
from {{ ref('int_invoice_reconciliation') }}
where status <> 'ok'

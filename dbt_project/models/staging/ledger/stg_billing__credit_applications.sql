-- What each credit grant paid for a customer's meter on a usage date (pricing/credits.py).
select
    grant_id,
    customer_id,
    meter_id,
    usage_date,
    billing_period_start_date,
    currency,
    amount_minor as credit_applied_minor_exact
from {{ source('billing', 'credit_applications') }}

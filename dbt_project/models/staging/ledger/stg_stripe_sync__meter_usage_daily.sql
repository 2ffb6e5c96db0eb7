{{ config(tags=["stripe_reconciliation"]) }}
-- What Stripe's meters counted, per customer, meter (Stripe event name) and UTC day.
select
    customer_id,
    meter_id,
    usage_date,
    quantity as stripe_quantity,
    read_at as stripe_read_at
from {{ source('stripe_sync', 'meter_usage_daily') }}

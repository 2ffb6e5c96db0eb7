-- Collection steps of invoices, as the ledger recorded them from Stripe's webhooks.
select
    id as dunning_event_id,
    event_key as stripe_event_id,
    invoice_id,
    customer_id,
    state,
    attempt,
    occurred_at,
    recorded_at
from {{ source('ledger', 'dunning_events') }}

-- Meter-event slots of the Stripe outbox; the slot id is `<customer>:<meter>:<usage date>`.
select
    slot_id,
    split_part(slot_id, ':', 1) as customer_id,
    split_part(slot_id, ':', 2) as meter_id,
    cast(split_part(slot_id, ':', 3) as date) as usage_date,
    revisions,
    quantity_sent,
    quantity_pending,
    quantity_dead,
    first_sent_at,
    last_sent_at
from {{ source('stripe_sync', 'outbox_slots') }}
where operation = 'meter_event'

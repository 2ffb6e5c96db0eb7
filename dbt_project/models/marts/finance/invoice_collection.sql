-- One row per invoice that needed collecting: its latest dunning state, for finance and
-- customer success (which invoices are failing, recovered or written off).
with steps as (
    select
        *,
        row_number() over (
            partition by invoice_id order by occurred_at desc, attempt desc, dunning_event_id desc
        ) as newest_first
    from {{ ref('stg_ledger__dunning_events') }}
)

select
    invoice_id,
    any_value(customer_id) as customer_id,
    max(state) filter (where newest_first = 1) as dunning_state,
    max(attempt) as payment_attempts,
    min(occurred_at) filter (where state in ('payment_failed', 'retry_scheduled'))
        as first_failed_at,
    max(occurred_at) as last_step_at,
    count(*) as steps
from steps
group by invoice_id

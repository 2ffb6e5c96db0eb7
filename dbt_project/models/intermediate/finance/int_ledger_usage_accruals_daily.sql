-- What the ledger accrued per usage slot (all revisions summed): the customer's unbilled
-- receivable side of the `usage_accrual` transactions, whose cause is the slot.
select
    customer_id,
    split_part(cause_id, ':', 2) as meter_id,
    cast(split_part(cause_id, ':', 3) as date) as usage_date,
    currency,
    sum(amount_minor) as accrued_minor,
    count(distinct transaction_id) as revisions
from {{ ref('stg_ledger__entries') }}
where transaction_kind = 'usage_accrual' and account_purpose = 'unbilled_receivable'
group by all

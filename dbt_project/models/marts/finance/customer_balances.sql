-- What each customer owes and holds, from the ledger: sums of entries, never a stored balance.
-- Liabilities (credits) are shown as positive amounts held for the customer.
select
    customer_id,
    currency,
    sum(amount_minor) filter (where account_purpose = 'unbilled_receivable')
        as unbilled_receivable_minor,
    sum(amount_minor) filter (where account_purpose = 'receivable') as receivable_minor,
    -sum(amount_minor) filter (where account_purpose = 'prepaid_credit') as prepaid_credit_minor,
    -sum(amount_minor) filter (where account_purpose = 'promotional_credit')
        as promotional_credit_minor,
    max(posted_at) as as_of
from {{ ref('stg_ledger__entries') }}
where account_owner = 'customer'
group by customer_id, currency

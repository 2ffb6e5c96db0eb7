-- Ledger entries with their transaction; renames and types only.
select
    e.id as entry_id,
    e.transaction_id,
    t.transaction_key,
    t.kind as transaction_kind,
    t.cause_type,
    t.cause_id,
    t.effective_at,
    t.posted_at,
    e.account,
    case split_part(e.account, ':', 1)
        when 'customer' then 'customer'
        when 'platform' then 'platform'
        else 'other'
    end as account_owner,
    case when split_part(e.account, ':', 1) = 'customer' then split_part(e.account, ':', 2) end
        as customer_id,
    case split_part(e.account, ':', 1)
        when 'customer' then split_part(e.account, ':', 3)
        when 'platform' then split_part(e.account, ':', 2)
    end as account_purpose,
    e.currency,
    e.amount_minor
from {{ source('ledger', 'entries') }} as e
join {{ source('ledger', 'transactions') }} as t on t.id = e.transaction_id

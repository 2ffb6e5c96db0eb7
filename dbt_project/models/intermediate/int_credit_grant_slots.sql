{{ config(materialized='view') }}
{#- Which credit grants may pay for each rated usage slot of a grant holder, and in which order:
    pricing/credits.py draws the grants down in `spending_rank` order, one after the other, day
    by day (that part is sequential: a grant's balance depends on every day before).

    A grant pays for the usage of a UTC day at whose end it is in force: it took effect before
    the day ended and expires at or after the day's end (a grant given on the 10th at noon pays
    for the 10th; one expiring on the 20th at noon last pays for the 19th). It pays only its
    customer's charges in its currency, for the meters it names (none named: every meter).
    Order: lower priority first, then earliest expiry (no expiry last), then earlier effect,
    then grant id. docs/pricing.md, Credits, works an example. -#}
with grants as (
    select * from {{ source('billing', 'credit_grants') }}
),

rated_slots as (
    select
        customer_id,
        meter_id,
        usage_date,
        currency,
        timezone('UTC', cast(usage_date + 1 as timestamp)) as usage_day_end
    from {{ ref('billable_usage_daily') }}
    where is_priced
        and customer_id in (select customer_id from grants)
),

eligible as (
    select
        rated_slots.customer_id,
        rated_slots.meter_id,
        rated_slots.usage_date,
        grants.grant_id,
        grants.priority,
        grants.expires_at,
        grants.effective_at
    from rated_slots
    inner join grants
        on rated_slots.customer_id = grants.customer_id
        and rated_slots.currency = grants.currency
        and (len(grants.meters) = 0 or list_contains(grants.meters, rated_slots.meter_id))
        and grants.effective_at < rated_slots.usage_day_end
        and (grants.expires_at is null or grants.expires_at >= rated_slots.usage_day_end)
)

select
    customer_id,
    meter_id,
    usage_date,
    grant_id,
    row_number() over (
        partition by customer_id, meter_id, usage_date
        order by priority, expires_at is null, expires_at, effective_at, grant_id
    ) as spending_rank
from eligible

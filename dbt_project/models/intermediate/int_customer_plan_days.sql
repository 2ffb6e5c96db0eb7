{#- Which plan a customer is on: from their Stripe subscription, valid from its start date
    (inclusive) to its end date (exclusive), in UTC days. -#}
with subscriptions as (
    select * from {{ ref('stg_stripe__subscriptions') }}
)

select
    customer_id,
    subscription_id,
    plan_id,
    currency,
    cast(started_at as date) as valid_from_date,
    coalesce(cast(ended_at as date), cast('9999-12-31' as date)) as valid_to_date
from subscriptions

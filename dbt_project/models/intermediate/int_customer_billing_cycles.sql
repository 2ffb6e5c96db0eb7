{#- Each customer's billing cycle: the day of the month (UTC) their billing periods begin on,
    from their subscriptions' `billing_cycle_anchor` (Stripe keeps the anchor when a plan
    changes, so a customer's subscriptions share it); without one, 1: calendar months. The
    macros in macros/billing_periods.sql turn a date and this day into the period; Stripe's
    month-end rule and the formulas are in docs/pricing.md, Billing periods. -#}
with customers as (
    select customer_id from {{ ref('stg_stripe__customers') }}
),

anchors as (
    select
        customer_id,
        min(day(billing_cycle_anchor_at)) as anchor_day,
        count(distinct day(billing_cycle_anchor_at)) as anchor_day_count
    from {{ ref('stg_stripe__subscriptions') }}
    where billing_cycle_anchor_at is not null
    group by customer_id
)

select
    customers.customer_id,
    cast(coalesce(anchors.anchor_day, 1) as integer) as billing_anchor_day,
    cast(coalesce(anchors.anchor_day_count, 0) as integer) as anchor_day_count
from customers
left join anchors on customers.customer_id = anchors.customer_id

{#- Which billing periods each subscription owes its plan's flat fee for, and when in the period
    the fee starts and stops.

    The Stripe exports hold each subscription's current state only (no item history, no trial
    dates), so the fee history is derived from what they have:
    - a plan change is a subscription that ends at the very second another subscription of the
      same customer starts (its successor): its unused time is credited;
    - a subscription that ends without a successor is a cancellation: no credit, as Stripe's
      default (`prorate=false`), unless the var `prorate_cancellations` is true;
    - a subscription in status `trialing` is in its trial until `current_period_end` (Stripe sets
      the current period to the trial while trialing): no fee before then.
    Billing periods follow the customer's billing-cycle anchor (int_customer_billing_cycles;
    calendar months without one), from 00:00 UTC of their first day. A subscription is billed
    for every period from the one its fee starts in until it ends, through its current period
    as exported (the periods Stripe has opened). The fee lines are in subscription_fee_lines; docs/pricing.md. -#}
with subscriptions as (
    select * from {{ ref('stg_stripe__subscriptions') }}
),

plans as (
    select * from {{ ref('price_book_plans') }}
),

billing_cycles as (
    select * from {{ ref('int_customer_billing_cycles') }}
),

with_fee as (
    select
        subscriptions.customer_id,
        subscriptions.subscription_id,
        subscriptions.plan_id,
        coalesce(plans.currency, subscriptions.currency) as currency,
        plans.monthly_fee_minor,
        subscriptions.started_at,
        case
            when subscriptions.status = 'trialing'
                and subscriptions.current_period_end_at > subscriptions.started_at
                then subscriptions.current_period_end_at
        end as trial_ends_at,
        subscriptions.ended_at,
        subscriptions.current_period_start_at,
        coalesce(billing_cycles.billing_anchor_day, 1) as billing_anchor_day
    from subscriptions
    left join plans on subscriptions.plan_id = plans.plan_id
    left join billing_cycles on subscriptions.customer_id = billing_cycles.customer_id
),

successors as (
    {#- The subscription that takes over at the second this one ends: a plan change. -#}
    select
        ending.subscription_id,
        min(starting.subscription_id) as successor_subscription_id
    from with_fee as ending
    inner join with_fee as starting
        on ending.customer_id = starting.customer_id
        and ending.ended_at = starting.started_at
        and ending.subscription_id <> starting.subscription_id
    group by ending.subscription_id
),

fee_windows as (
    select
        with_fee.*,
        coalesce(with_fee.trial_ends_at, with_fee.started_at) as fee_starts_at,
        successors.successor_subscription_id,
        successors.successor_subscription_id is not null as is_plan_change,
        with_fee.ended_at is not null
            and (
                successors.successor_subscription_id is not null
                or {{ var('prorate_cancellations', false) }}
            ) as is_prorated_end,
        cast({{ billing_period_start('coalesce(with_fee.trial_ends_at, with_fee.started_at)', 'with_fee.billing_anchor_day') }}
            as timestamp) as first_period_start_at,
        cast({{ billing_period_start('coalesce(with_fee.ended_at, with_fee.current_period_start_at)', 'with_fee.billing_anchor_day') }}
            as timestamp) as last_period_start_at
    from with_fee
    left join successors on with_fee.subscription_id = successors.subscription_id
),

digits as (
    select 0 as digit union all select 1 union all select 2 union all select 3
    union all select 4 union all select 5 union all select 6 union all select 7
    union all select 8 union all select 9
),

month_offsets as (
    {#- 0 to 999 months: 83 years of periods per subscription. -#}
    select hundreds.digit * 100 + tens.digit * 10 + ones.digit as month_offset
    from digits as hundreds
    cross join digits as tens
    cross join digits as ones
),

periods as (
    select
        fee_windows.*,
        cast({{ billing_period_after('fee_windows.first_period_start_at', 'fee_windows.billing_anchor_day', 'month_offsets.month_offset') }}
            as timestamp) as billing_period_start_at,
        cast({{ billing_period_after('fee_windows.first_period_start_at', 'fee_windows.billing_anchor_day', 'month_offsets.month_offset + 1') }}
            as timestamp) as billing_period_end_at
    from fee_windows
    inner join month_offsets
        on month_offsets.month_offset
        <= {{ dbt.datediff('fee_windows.first_period_start_at', 'fee_windows.last_period_start_at', 'month') }}
    where fee_windows.ended_at is null or fee_windows.fee_starts_at < fee_windows.ended_at
),

final as (
    select
        customer_id,
        subscription_id,
        plan_id,
        currency,
        monthly_fee_minor,
        cast(billing_period_start_at as date) as billing_period_start_date,
        billing_period_start_at,
        billing_period_end_at,
        started_at,
        trial_ends_at,
        fee_starts_at,
        ended_at,
        successor_subscription_id,
        is_plan_change,
        is_prorated_end
    from periods
    where ended_at is null or billing_period_start_at < ended_at
)

select * from final

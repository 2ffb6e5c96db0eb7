-- Per customer and rated day: the period's usage charges to date against the customer's spend
-- cap, the credit it holds, and the resulting entitlement state the product's edge reads
-- (ok / warning / capped). Usage over a cap is billed like any other: over_cap_minor records it.
with rated_days as (
    select
        customer_id,
        currency,
        billing_period_start_date,
        usage_date,
        -- The plan rating used that day (a change of plan mid-day keeps the later one).
        max(plan_id) as plan_id,
        sum(amount_minor_exact) as usage_amount_minor
    from {{ ref('billable_usage_daily') }}
    where is_priced
    group by customer_id, currency, billing_period_start_date, usage_date
),

spend as (
    select
        *,
        -- Each day's amount is the period-to-date amount's increase, so the running sum is the
        -- period's charges through the day (late events included when the day is re-rated).
        sum(usage_amount_minor) over (
            partition by customer_id, currency, billing_period_start_date
            order by usage_date
            rows between unbounded preceding and current row
        ) as period_to_date_spend_minor
    from rated_days
),

caps_in_force as (
    select
        spend.customer_id,
        spend.currency,
        spend.usage_date,
        caps.monthly_cap_minor,
        caps.warning_share,
        row_number() over (
            partition by spend.customer_id, spend.currency, spend.usage_date
            order by caps.customer_id is not null desc, caps.effective_from desc
        ) as preference
    from spend
    join {{ ref('price_book_spend_caps') }} as caps
        on caps.currency = spend.currency
        and caps.effective_from <= spend.usage_date
        and (
            caps.customer_id = spend.customer_id
            or (caps.customer_id is null and caps.plan_id = spend.plan_id)
        )
),

credit_held as (
    select
        spend.customer_id,
        spend.currency,
        spend.usage_date,
        -sum(entries.amount_minor) as credit_balance_minor
    from spend
    join {{ ref('stg_ledger__entries') }} as entries
        on entries.customer_id = spend.customer_id
        and entries.currency = spend.currency
        and entries.account_purpose in ('prepaid_credit', 'promotional_credit')
        -- Credit in force at the end of the day (UTC), in business time.
        and timezone('UTC', entries.effective_at) < spend.usage_date + interval 1 day
    group by spend.customer_id, spend.currency, spend.usage_date
),

final as (
    select
        spend.customer_id,
        spend.usage_date,
        spend.billing_period_start_date,
        spend.plan_id,
        spend.currency,
        spend.usage_amount_minor,
        spend.period_to_date_spend_minor,
        caps.monthly_cap_minor as spend_cap_minor,
        caps.warning_share,
        cast(coalesce(credit_held.credit_balance_minor, 0) as {{ money_type() }})
            as credit_balance_minor,
        cast(
            greatest(spend.period_to_date_spend_minor - caps.monthly_cap_minor, 0)
            as {{ money_type() }}
        ) as over_cap_minor,
        case
            when caps.monthly_cap_minor is null then 'ok'
            when spend.period_to_date_spend_minor >= caps.monthly_cap_minor then 'capped'
            when spend.period_to_date_spend_minor >= caps.monthly_cap_minor * caps.warning_share
                then 'warning'
            else 'ok'
        end as entitlement_state
    from spend
    left join caps_in_force as caps
        on caps.customer_id = spend.customer_id
        and caps.currency = spend.currency
        and caps.usage_date = spend.usage_date
        and caps.preference = 1
    left join credit_held
        on credit_held.customer_id = spend.customer_id
        and credit_held.currency = spend.currency
        and credit_held.usage_date = spend.usage_date
)

select * from final

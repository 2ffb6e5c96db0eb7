{#- Each customer's billing periods that the warehouse rates: every period, by the customer's
    billing-cycle anchor (int_customer_billing_cycles), that overlaps the days from the first to
    the last day with rated usage. Invoices (invoice_lines) and minimum spends
    (minimum_spend_period) are made for these periods, so each follows its customer's cycle. -#}
with rated_days as (
    select min(usage_date) as first_date, max(usage_date) as last_date
    from {{ ref('billable_usage_daily') }}
    where is_priced
),

customers as (
    select
        cycles.customer_id,
        cycles.billing_anchor_day,
        rated_days.last_date,
        {{ billing_period_start('rated_days.first_date', 'cycles.billing_anchor_day') }}
            as first_period_start_date
    from {{ ref('int_customer_billing_cycles') }} as cycles
    cross join rated_days
    where rated_days.first_date is not null
),

period_offsets as (
    {#- Enough consecutive periods to reach the last rated day: one per month it spans, and
        one more for a period that began in the month before. -#}
    select range as period_offset
    from range(
        0,
        (select {{ dbt.datediff('first_date', 'last_date', 'month') }} + 2 from rated_days)
    )
),

periods as (
    select
        customers.customer_id,
        customers.billing_anchor_day,
        customers.last_date,
        {{ billing_period_after('customers.first_period_start_date', 'customers.billing_anchor_day', 'period_offsets.period_offset') }}
            as billing_period_start_date,
        {{ billing_period_after('customers.first_period_start_date', 'customers.billing_anchor_day', 'period_offsets.period_offset + 1') }}
            as billing_period_end_date
    from customers
    cross join period_offsets
)

select
    customer_id,
    billing_period_start_date,
    billing_period_end_date,
    billing_anchor_day
from periods
where billing_period_start_date <= last_date

{#- How long usage takes to become money, per usage date and meter: occurred -> received (per
    event the meter reads), end of the usage day -> first ledger posting of the slot (billed),
    and billed -> first accepted by Stripe (sent), each as p50 / p95 / p99 / max in seconds. -#}
with event_lag as (
    select * from {{ ref('int_meter_event_lag_daily') }}
),

meters as (
    select meter_id from {{ ref('price_book_meters') }}
),

slots_billed as (
    select
        customer_id,
        split_part(cause_id, ':', 2) as meter_id,
        cast(split_part(cause_id, ':', 3) as date) as usage_date,
        min(posted_at) as first_billed_at
    from {{ ref('stg_ledger__entries') }}
    where transaction_kind = 'usage_accrual' and account_purpose = 'unbilled_receivable'
    group by all
),

slot_lag as (
    select
        billed.usage_date,
        billed.meter_id,
        epoch(billed.first_billed_at) - epoch(cast(billed.usage_date + 1 as timestamp))
            as billed_lag_seconds,
        epoch(sent.first_sent_at) - epoch(billed.first_billed_at) as sent_lag_seconds
    from slots_billed as billed
    left join {{ ref('stg_stripe_sync__outbox_slots') }} as sent
        on billed.customer_id = sent.customer_id
        and billed.meter_id = sent.meter_id
        and billed.usage_date = sent.usage_date
),

per_meter as (
    select
        usage_date,
        meter_id,
        count(*) as slots,
        quantile_cont(billed_lag_seconds, 0.5) as billed_lag_p50_seconds,
        quantile_cont(billed_lag_seconds, 0.95) as billed_lag_p95_seconds,
        quantile_cont(billed_lag_seconds, 0.99) as billed_lag_p99_seconds,
        max(billed_lag_seconds) as billed_lag_max_seconds,
        count(sent_lag_seconds) as slots_sent,
        quantile_cont(sent_lag_seconds, 0.5) as sent_lag_p50_seconds,
        quantile_cont(sent_lag_seconds, 0.95) as sent_lag_p95_seconds,
        quantile_cont(sent_lag_seconds, 0.99) as sent_lag_p99_seconds,
        max(sent_lag_seconds) as sent_lag_max_seconds
    from slot_lag
    group by usage_date, meter_id
)

select
    per_meter.usage_date,
    per_meter.meter_id,
    event_lag.events,
    event_lag.received_lag_p50_seconds,
    event_lag.received_lag_p95_seconds,
    event_lag.received_lag_p99_seconds,
    event_lag.received_lag_max_seconds,
    per_meter.* exclude (usage_date, meter_id)
from per_meter
inner join meters on per_meter.meter_id = meters.meter_id
left join event_lag
    on per_meter.usage_date = event_lag.usage_date
    and per_meter.meter_id = event_lag.meter_id

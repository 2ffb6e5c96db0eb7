with source as (
    select * from {{ source('stripe', 'subscriptions') }}
),

renamed as (
    select
        id as subscription_id,
        customer as customer_id,
        status,
        lower(currency) as currency,
        json_extract_string(metadata, '$.plan_id') as plan_id,
        {{ from_unix_seconds('start_date') }} as started_at,
        {{ from_unix_seconds('ended_at') }} as ended_at,
        {{ from_unix_seconds('current_period_start') }} as current_period_start_at,
        {{ from_unix_seconds('current_period_end') }} as current_period_end_at,
        {{ from_unix_seconds('billing_cycle_anchor') }} as billing_cycle_anchor_at,
        {{ from_unix_seconds('created') }} as created_at
    from source
)

select * from renamed

with source as (
    select * from {{ source('stripe', 'prices') }}
),

renamed as (
    select
        id as price_id,
        product as product_id,
        lower(currency) as currency,
        cast(nullif(unit_amount, '') as bigint) as unit_amount_minor,
        cast(nullif(unit_amount_decimal, '') as {{ money_type() }}) as unit_price_minor,
        billing_scheme,
        recurring_interval,
        recurring_usage_type,
        lookup_key,
        active = 'true' as is_active,
        {{ from_unix_seconds('created') }} as created_at
    from source
)

select * from renamed

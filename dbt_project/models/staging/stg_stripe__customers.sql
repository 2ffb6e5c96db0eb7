with source as (
    select * from {{ source('stripe', 'customers') }}
),

renamed as (
    select
        id as customer_id,
        email,
        name as customer_name,
        lower(currency) as currency,
        {{ from_unix_seconds('created') }} as created_at
    from source
)

select * from renamed

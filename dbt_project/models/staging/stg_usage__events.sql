with source as (
    select * from {{ source('usage', 'accepted_usage_events') }}
),

renamed as (
    select
        event_id,
        customer_id,
        event_type,
        model,
        request_kind,
        occurred_at,
        received_at,
        usage_date,
        arrival_date,
        cast(input_tokens as bigint) as input_tokens,
        cast(output_tokens as bigint) as output_tokens,
        cast(cache_read_tokens as bigint) as cache_read_tokens,
        tool,
        cast(cost_minor as bigint) as cost_minor,
        source_file,
        line_number
    from source
)

select * from renamed

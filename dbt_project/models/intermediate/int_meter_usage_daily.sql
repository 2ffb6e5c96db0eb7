{#- Maps aggregated events onto the price book's meters: one quantity per customer, meter, day.
    A model call's meters name its model; a tool call's name none (every tool counts). -#}
with usage_daily as (
    select * from {{ ref('int_usage_daily') }}
),

meters as (
    select * from {{ ref('price_book_meters') }}
),

metered as (
    select
        usage_daily.customer_id,
        meters.meter_id,
        usage_daily.usage_date,
        usage_daily.model,
        usage_daily.event_count,
        case
            when meters.aggregation = 'count' then usage_daily.event_count
            when meters.quantity_property = 'input_tokens' then usage_daily.input_tokens
            when meters.quantity_property = 'output_tokens' then usage_daily.output_tokens
            when meters.quantity_property = 'cache_read_tokens' then usage_daily.cache_read_tokens
            when meters.quantity_property = 'cost_minor' then usage_daily.cost_minor
        end as quantity_units
    from usage_daily
    inner join meters
        on usage_daily.event_type = meters.event_type
        -- A tool call has no model; its meters name none.
        and usage_daily.model is not distinct from meters.model
)

select * from metered

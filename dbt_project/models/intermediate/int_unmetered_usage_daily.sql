{#- Usage that matches no meter of the price book: revenue at risk, so a test fails on any row. -#}
with usage_daily as (
    select * from {{ ref('int_usage_daily') }}
),

meters as (
    select distinct event_type, model from {{ ref('price_book_meters') }}
)

select usage_daily.*
from usage_daily
left join meters
    on usage_daily.event_type = meters.event_type
    and usage_daily.model is not distinct from meters.model
where meters.event_type is null

{#- Usage that matches no meter of the price book: revenue at risk, so a test fails on any row. -#}
with usage_daily as (
    select * from {{ ref('int_usage_daily') }}
),

meters as (
    select * from {{ ref('int_meter_definitions') }}
)

select usage_daily.*
from usage_daily
where not exists (
    select 1 from meters where {{ meter_matches_usage('meters', 'usage_daily') }}
)

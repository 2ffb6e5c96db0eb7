{#- Every raw line is accounted for: raw = accepted + duplicates + quarantined, per arrival day. -#}
with file_counts as (
    select * from {{ source('usage', 'usage_file_counts') }}
)

select
    arrival_date,
    count(*) as files,
    sum(raw_lines) as raw_lines,
    sum(accepted_lines) as accepted_lines,
    sum(duplicate_lines) as duplicate_lines,
    sum(quarantined_lines) as quarantined_lines,
    sum(raw_lines) - sum(accepted_lines) - sum(duplicate_lines) - sum(quarantined_lines)
        as unaccounted_lines
from file_counts
group by arrival_date

{#- Usage dates touched by the arrival dates of the run's partition window (end exclusive). -#}
{% macro touched_usage_dates() -%}
    select usage_date from {{ source('usage', 'partition_usage_dates') }}
    where arrival_date >= cast('{{ var("min_date") }}' as date)
      and arrival_date < cast('{{ var("max_date") }}' as date)
{%- endmacro %}

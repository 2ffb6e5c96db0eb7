{#- Usage dates touched by the arrival dates of the run's partition window (end exclusive). The
    window comes from the environment (orchestration/assets/dbt.py sets it for each run); without
    it, every arrival date counts, so a plain `dbt build` rebuilds all days. -#}
{% macro touched_usage_dates() -%}
    select usage_date from {{ source('usage', 'partition_usage_dates') }}
    where arrival_date >= cast('{{ env_var("METERBOOK_ARRIVAL_FROM", "1970-01-01") }}' as date)
      and arrival_date < cast('{{ env_var("METERBOOK_ARRIVAL_UNTIL", "2999-01-01") }}' as date)
{%- endmacro %}

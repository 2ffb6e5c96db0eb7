{#- The share of a flat fee for part of a billing period, in minor units, to 12 decimal places
    truncated toward zero: fee_minor x seconds / period_seconds, in integer arithmetic (dividing
    two DECIMALs gives a DOUBLE in DuckDB, and no float may touch money). Truncating at 12
    places never moves the amount across a half minor unit, so rounding it with
    round_to_minor_units gives what rounding the true fraction would. `fee_minor`, `seconds`
    and `period_seconds` are integers, `seconds` >= 0 and `period_seconds` > 0. The Python
    reference is pricing.prorations.prorated_minor_exact. See docs/pricing.md. -#}
{% macro prorated_minor_exact(fee_minor, seconds, period_seconds) -%}
    {{ return(adapter.dispatch('prorated_minor_exact')(fee_minor, seconds, period_seconds)) }}
{%- endmacro %}

{% macro default__prorated_minor_exact(fee_minor, seconds, period_seconds) -%}
    cast(
        cast({{ fee_minor }} as decimal(38, 0)) * ({{ seconds }}) * 1000000000000
        / ({{ period_seconds }})
        as decimal(38, 0)
    ) * cast(0.000000000001 as {{ money_type() }})
{%- endmacro %}

{% macro duckdb__prorated_minor_exact(fee_minor, seconds, period_seconds) -%}
    cast(
        cast({{ fee_minor }} as hugeint) * ({{ seconds }}) * 1000000000000
        // ({{ period_seconds }})
        as decimal(38, 0)
    ) * cast(0.000000000001 as {{ money_type() }})
{%- endmacro %}

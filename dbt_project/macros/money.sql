{#- Money types and the one rounding rule. See docs/pricing.md. -#}

{% macro money_type() -%}
    decimal(38, 12)
{%- endmacro %}

{#- Round an exact amount in minor units to whole minor units: half away from zero
    (0.5 -> 1, -0.5 -> -1). Applied once, at invoice line finalisation. -#}
{% macro round_to_minor_units(amount) -%}
    cast(sign({{ amount }}) * floor(abs({{ amount }}) + 0.5) as bigint)
{%- endmacro %}

{% macro from_unix_seconds(column) -%}
    case when {{ column }} is null or {{ column }} = '' then null
         else to_timestamp(cast({{ column }} as bigint)) at time zone 'UTC' end
{%- endmacro %}

{#- Whole packages of `size` units needed for `units` (both integers >= 0): rounded up, in
    integer arithmetic (no float on the way). -#}
{% macro packages_needed(units, size) -%}
    {{ return(adapter.dispatch('packages_needed')(units, size)) }}
{%- endmacro %}

{% macro default__packages_needed(units, size) -%}
    (({{ units }}) + ({{ size }}) - 1) / ({{ size }})
{%- endmacro %}

{% macro duckdb__packages_needed(units, size) -%}
    (({{ units }}) + ({{ size }}) - 1) // ({{ size }})
{%- endmacro %}

{#- Stands in for "no upper bound" when ordering tiers (the last tier's up_to_units is null). -#}
{% macro unbounded_units() -%}
    cast(9223372036854775807 as bigint)
{%- endmacro %}

{#- Whether a row of int_usage_daily (`usage`) counts towards a meter of int_meter_definitions
    (`meter`): same event type, the meter's model (or any, when it names none), and a value
    its property filters accept. One definition for the rating and the unmetered-usage check. -#}
{% macro meter_matches_usage(meter, usage) %}
    {{ usage }}.event_type = {{ meter }}.event_type
    and ({{ meter }}.model is null or {{ usage }}.model = {{ meter }}.model)
    and (
        {{ meter }}.accepted_request_kinds is null
        or list_contains({{ meter }}.accepted_request_kinds, {{ usage }}.request_kind)
    )
    and (
        {{ meter }}.accepted_tools is null
        or list_contains({{ meter }}.accepted_tools, {{ usage }}.tool)
    )
{% endmacro %}

{#- A usage row's value of the meter's quantity property, among the columns that hold the
    aggregate the meter asks for (int_usage_daily: `<property>` is the sum, `max_<property>`
    the maximum, `latest_<property>` the latest event's; `count` reads the event count). -#}
{% macro usage_property_value(meter, usage) %}
    {%- set column_prefixes = {'sum': '', 'max': 'max_', 'latest': 'latest_'} -%}
    case
        when {{ meter }}.aggregation = 'count' then {{ usage }}.event_count
        {%- for aggregation, prefix in column_prefixes.items() %}
        {%- for property in numeric_properties() %}
        when {{ meter }}.aggregation = '{{ aggregation }}'
            and {{ meter }}.quantity_property = '{{ property }}'
            then {{ usage }}.{{ prefix }}{{ property }}
        {%- endfor %}
        {%- endfor %}
    end
{% endmacro %}

{#- The event properties a meter can sum, take the maximum or latest value of
    (pricing/meters.py NUMERIC_PROPERTIES; the seed's tests list the same). -#}
{% macro numeric_properties() %}
    {{ return(['input_tokens', 'output_tokens', 'cache_read_tokens', 'cost_minor']) }}
{% endmacro %}

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
    aggregate the meter asks for (`sum`: the sum, `max`: the maximum, `latest`: the latest
    event's; a string property for `unique_count`). -#}
{% macro usage_property_value(meter, usage) %}
    case {{ meter }}.aggregation
        when 'count' then {{ usage }}.event_count
        when 'sum' then case {{ meter }}.quantity_property
            when 'input_tokens' then {{ usage }}.input_tokens
            when 'output_tokens' then {{ usage }}.output_tokens
            when 'cache_read_tokens' then {{ usage }}.cache_read_tokens
            when 'cost_minor' then {{ usage }}.cost_minor
        end
        when 'max' then case {{ meter }}.quantity_property
            when 'input_tokens' then {{ usage }}.max_input_tokens
            when 'output_tokens' then {{ usage }}.max_output_tokens
            when 'cache_read_tokens' then {{ usage }}.max_cache_read_tokens
            when 'cost_minor' then {{ usage }}.max_cost_minor
        end
        when 'latest' then case {{ meter }}.quantity_property
            when 'input_tokens' then {{ usage }}.latest_input_tokens
            when 'output_tokens' then {{ usage }}.latest_output_tokens
            when 'cache_read_tokens' then {{ usage }}.latest_cache_read_tokens
            when 'cost_minor' then {{ usage }}.latest_cost_minor
        end
    end
{% endmacro %}

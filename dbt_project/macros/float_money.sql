{#- The build check that no money is stored as binary floating point (docs/pricing.md, "Exact
    amounts"): after every dbt invocation (the project's on-run-end hook), any FLOAT, DOUBLE or
    REAL column of the warehouse whose name says money fails the build, naming the columns. A
    float cannot hold every cent: 0.1 + 0.2 is not 0.3. -#}
{% macro money_column_words() %}
    {{ return(["amount", "price", "minor", "fee", "balance", "credit", "receivable", "revenue"]) }}
{% endmacro %}

{% macro fail_on_float_money_columns() %}
    {% if execute %}
        {% set conditions = [] %}
        {% for word in money_column_words() %}
            {% do conditions.append("lower(column_name) like '%" ~ word ~ "%'") %}
        {% endfor %}
        {% set query %}
            select table_schema || '.' || table_name || '.' || column_name || ' (' || data_type || ')'
            from information_schema.columns
            where (data_type in ('FLOAT', 'DOUBLE', 'REAL') or data_type like 'FLOAT%')
                and ({{ conditions | join(' or ') }})
            order by 1
        {% endset %}
        {% set found = run_query(query).columns[0].values() %}
        {% if found | length > 0 %}
            {{ exceptions.raise_compiler_error(
                "Money stored as binary floating point in the warehouse: " ~ (found | join(", "))
                ~ ". Cast it to DECIMAL (the money_type() macro) where the model computes it."
            ) }}
        {% endif %}
    {% endif %}
    select 1
{% endmacro %}

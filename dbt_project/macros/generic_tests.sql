{#- Generic tests we would otherwise take from dbt_utils (no dbt packages can be installed). -#}

{% test expression_is_true(model, expression) %}
    select * from {{ model }} where not ({{ expression }})
{% endtest %}

{% test accepted_range(model, column_name, min_value=none, max_value=none) %}
    select * from {{ model }}
    where {{ column_name }} is not null and (
        false
        {% if min_value is not none %} or {{ column_name }} < {{ min_value }} {% endif %}
        {% if max_value is not none %} or {{ column_name }} > {{ max_value }} {% endif %}
    )
{% endtest %}

{% test unique_combination(model, columns) %}
    select {{ columns | join(', ') }}, count(*) as copies
    from {{ model }}
    group by {{ columns | join(', ') }}
    having count(*) > 1
{% endtest %}

{#- Tiers of each tiered charge: exactly one unbounded tier, bounds of at least 1, every tiered
    charge has tiers and every set of tiers belongs to a tiered charge. -#}
{% test charge_tiers_are_well_formed(model) %}
    with tier_sets as (
        select
            plan_id, meter_id, effective_from,
            count(*) filter (where up_to_units is null) as unbounded_tiers,
            min(up_to_units) as lowest_bound
        from {{ model }}
        group by plan_id, meter_id, effective_from
    ),

    tiered_charges as (
        select plan_id, meter_id, effective_from
        from {{ ref('price_book_charges') }}
        where charge_model in ('graduated', 'volume')
    )

    select
        coalesce(tier_sets.plan_id, tiered_charges.plan_id) as plan_id,
        coalesce(tier_sets.meter_id, tiered_charges.meter_id) as meter_id,
        coalesce(tier_sets.effective_from, tiered_charges.effective_from) as effective_from
    from tier_sets
    full outer join tiered_charges
        on tier_sets.plan_id = tiered_charges.plan_id
        and tier_sets.meter_id = tiered_charges.meter_id
        and tier_sets.effective_from = tiered_charges.effective_from
    where tier_sets.plan_id is null
        or tiered_charges.plan_id is null
        or tier_sets.unbounded_tiers <> 1
        or tier_sets.lowest_bound < 1
{% endtest %}

{#- The tiers of each tiered charge add up, per customer, period and meter, to the rated days'
    exact amounts (billable_usage_daily): a row is money a tier lost or made up. -#}
{% test tiers_add_up_to_the_rating(model) %}
    with rated as (
        select customer_id, billing_period_start_date, meter_id,
            sum(amount_minor_exact) as rated_minor
        from {{ ref('billable_usage_daily') }}
        where is_priced and charge_model in ('graduated', 'volume')
        group by customer_id, billing_period_start_date, meter_id
    ),

    tiered as (
        select customer_id, billing_period_start_date, meter_id,
            sum(amount_minor_exact) as tiered_minor
        from {{ model }}
        group by customer_id, billing_period_start_date, meter_id
    )

    select *
    from rated
    full outer join tiered using (customer_id, billing_period_start_date, meter_id)
    where coalesce(rated.rated_minor, 0) <> coalesce(tiered.tiered_minor, 0)
{% endtest %}

{#- A meter's period-to-date quantity (the running sum of what each day adds) is never below
    zero: a day may lower it (a latest value that went down), never past nothing. -#}
{% test period_to_date_never_negative(model) %}
    with running as (
        select
            customer_id, meter_id, usage_date,
            sum(quantity_units) over (
                partition by customer_id, meter_id,
                    {{ dbt.date_trunc('month', 'usage_date') }}
                order by usage_date
                rows between unbounded preceding and current row
            ) as period_to_date_units
        from {{ model }}
    )

    select * from running where period_to_date_units < 0
{% endtest %}

{#- The charge models' arithmetic, once: CTEs that value quantity columns of `source` under
    each row's charge in force, for billable_usage_daily (the rating) and for
    usage_reconciliation_daily (Stripe's counts valued as Stripe's mirrored price would).

    `source` must have customer_id, meter_id, usage_date, plan_id, charge_effective_from,
    charge_model, unit_price_minor, package_size_units, package_price_minor, percentage_rate,
    fixed_fee_minor and, per entry of `amounts` (quantity column, event-count column, output
    column), the billable quantity and the event count to value. Emits the CTEs
    `<prefix>tier_bounds`, `<prefix>tier_parts`, `<prefix>tiered` and `<prefix>valued`
    (`source`'s columns plus each output column, exact, in money_type); `<prefix>tier_parts`
    has one row per tier of a tiered charge, with the tier's bounds and prices and, per output
    column, the tier's amount (`<output>_tiered`) and units (`<output>_tier_units`), for
    invoice_line_tiers. Graduated: each tier's
    units at its price, plus its flat fee once usage entered it; volume: all units at the price
    of the one tier the quantity falls in, plus that tier's flat fee; package: whole packages,
    rounded up; percentage: rate x quantity + fee x events. The Python reference is
    pricing/charges.py. -#}
{% macro charge_valuation(source, amounts, prefix='') -%}
{{ prefix }}tier_bounds as (
    select
        plan_id,
        meter_id,
        effective_from,
        coalesce(
            lag(up_to_units) over (
                partition by plan_id, meter_id, effective_from
                order by coalesce(up_to_units, {{ unbounded_units() }})
            ),
            0
        ) as from_units,
        up_to_units,
        unit_price_minor,
        flat_fee_minor
    from {{ ref('price_book_charge_tiers') }}
),

{{ prefix }}tier_parts as (
    select
        {{ source }}.customer_id,
        {{ source }}.meter_id,
        {{ source }}.usage_date,
        bounds.from_units as tier_from_units,
        bounds.up_to_units as tier_up_to_units,
        bounds.unit_price_minor as tier_unit_price_minor,
        bounds.flat_fee_minor as tier_flat_fee_minor,
        {% for quantity, events, amount in amounts %}
        case
            when {{ source }}.{{ quantity }} <= bounds.from_units then 0
            when {{ source }}.charge_model = 'graduated' then
                least({{ source }}.{{ quantity }},
                    coalesce(bounds.up_to_units, {{ source }}.{{ quantity }}))
                - bounds.from_units
            when bounds.up_to_units is null
                or {{ source }}.{{ quantity }} <= bounds.up_to_units then {{ source }}.{{ quantity }}
            else 0
        end as {{ amount }}_tier_units,
        case
            when {{ source }}.{{ quantity }} <= bounds.from_units then 0
            when {{ source }}.charge_model = 'graduated' then
                cast(
                    least({{ source }}.{{ quantity }},
                        coalesce(bounds.up_to_units, {{ source }}.{{ quantity }}))
                    - bounds.from_units
                    as decimal(38, 0)
                ) * bounds.unit_price_minor + bounds.flat_fee_minor
            when bounds.up_to_units is null
                or {{ source }}.{{ quantity }} <= bounds.up_to_units then
                cast({{ source }}.{{ quantity }} as decimal(38, 0)) * bounds.unit_price_minor
                + bounds.flat_fee_minor
            else 0
        end as {{ amount }}_tiered{{ ',' if not loop.last }}
        {% endfor %}
    from {{ source }}
    inner join {{ prefix }}tier_bounds as bounds
        on {{ source }}.plan_id = bounds.plan_id
        and {{ source }}.meter_id = bounds.meter_id
        and {{ source }}.charge_effective_from = bounds.effective_from
    where {{ source }}.charge_model in ('graduated', 'volume')
),

{{ prefix }}tiered as (
    select
        customer_id,
        meter_id,
        usage_date,
        {% for quantity, events, amount in amounts %}
        sum({{ amount }}_tiered) as {{ amount }}_tiered{{ ',' if not loop.last }}
        {% endfor %}
    from {{ prefix }}tier_parts
    group by customer_id, meter_id, usage_date
),

{{ prefix }}valued as (
    select
        {{ source }}.*,
        {% for quantity, events, amount in amounts %}
        cast(
            case {{ source }}.charge_model
                when 'per_unit' then
                    cast({{ source }}.{{ quantity }} as decimal(38, 0))
                    * {{ source }}.unit_price_minor
                when 'package' then
                    cast(
                        {{ packages_needed(source ~ '.' ~ quantity,
                            source ~ '.package_size_units') }}
                        as decimal(38, 0)
                    ) * {{ source }}.package_price_minor
                when 'percentage' then
                    cast({{ source }}.{{ quantity }} as decimal(38, 0))
                    * {{ source }}.percentage_rate
                    + cast({{ source }}.{{ events }} as decimal(38, 0))
                    * {{ source }}.fixed_fee_minor
                when 'graduated' then coalesce(tiered.{{ amount }}_tiered, 0)
                when 'volume' then coalesce(tiered.{{ amount }}_tiered, 0)
            end
            as {{ money_type() }}
        ) as {{ amount }}{{ ',' if not loop.last }}
        {% endfor %}
    from {{ source }}
    left join {{ prefix }}tiered as tiered
        on {{ source }}.customer_id = tiered.customer_id
        and {{ source }}.meter_id = tiered.meter_id
        and {{ source }}.usage_date = tiered.usage_date
)
{%- endmacro %}

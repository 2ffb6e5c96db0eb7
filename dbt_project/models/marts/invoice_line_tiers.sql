{#- The tiers of each tiered usage line of invoice_lines (graduated and volume charges), one row
    per customer, billing period, meter, charge version and tier, as Stripe's invoice shows a
    graduated price tier by tier: the units billed in the tier and their exact amount.

    Built as the rating is: per day, each tier's units and amount through the day minus
    through the day before, at the day's charge (charge_valuation, the rating's arithmetic),
    summed over the period. So the tiers of a line add up to its exact amount (a dbt test), a
    late event moves units between tiers, and under volume pricing the day usage crosses a
    threshold moves all of the period's units to the new tier: the old tier then nets to zero
    and is left out. A charge that takes over mid-period (a price or plan change) is its own
    set of tiers (charge_effective_from); under volume pricing its lower tier can then be
    negative, the period's earlier units moving to the tier they are billed in. Amounts stay
    exact; invoice_lines rounds the line, once. -#}
with rated as (
    select
        customer_id,
        meter_id,
        usage_date,
        billing_period_start_date,
        currency,
        plan_id,
        charge_effective_from,
        charge_model,
        greatest(period_to_date_units - included_units, 0) as billable_units,
        greatest(period_to_date_units - quantity_units - included_units, 0)
            as prior_billable_units,
        0 as no_events,
        -- What charge_valuation reads for the untiered models (none of these rows is one).
        cast(null as {{ money_type() }}) as unit_price_minor,
        cast(null as bigint) as package_size_units,
        cast(null as {{ money_type() }}) as package_price_minor,
        cast(null as {{ money_type() }}) as percentage_rate,
        cast(null as {{ money_type() }}) as fixed_fee_minor
    from {{ ref('billable_usage_daily') }}
    where is_priced and charge_model in ('graduated', 'volume')
),

{{ charge_valuation('rated', [
    ('billable_units', 'no_events', 'through_day'),
    ('prior_billable_units', 'no_events', 'through_prior_day'),
]) }},

tier_days as (
    select
        rated.customer_id,
        rated.billing_period_start_date,
        rated.meter_id,
        rated.currency,
        rated.plan_id,
        rated.charge_model,
        rated.charge_effective_from,
        parts.tier_from_units,
        parts.tier_up_to_units,
        parts.tier_unit_price_minor,
        parts.tier_flat_fee_minor,
        parts.through_day_tier_units - parts.through_prior_day_tier_units as quantity_units,
        parts.through_day_tiered - parts.through_prior_day_tiered as amount_minor_exact
    from tier_parts as parts
    inner join rated
        on parts.customer_id = rated.customer_id
        and parts.meter_id = rated.meter_id
        and parts.usage_date = rated.usage_date
),

tiers as (
    select
        customer_id,
        billing_period_start_date,
        meter_id,
        currency,
        plan_id,
        charge_model,
        charge_effective_from,
        -- The tier's first and last unit (null: no upper bound), as the price book counts them.
        tier_from_units + 1 as tier_first_unit,
        tier_up_to_units as tier_last_unit,
        tier_unit_price_minor,
        tier_flat_fee_minor,
        sum(quantity_units) as quantity_units,
        cast(sum(amount_minor_exact) as {{ money_type() }}) as amount_minor_exact
    from tier_days
    group by all
)

select * from tiers
where quantity_units <> 0 or amount_minor_exact <> 0

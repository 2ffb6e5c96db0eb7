{#- Rates each customer's daily meter quantity under the charge of their plan in force that day.

    A charge prices the billable period-to-date quantity (used since the billing period began,
    less the plan's included allowance). The day's amount is the charge's amount through the day
    minus its amount through the day before, both at the day's charge: the days of a period add
    up to the period's amount exactly, tiers are crossed where the usage crosses them, and a late
    event re-rates every later day of its period. Amounts stay exact (sub-cent); rounding happens
    once, in invoice_lines. The Python reference is pricing/charges.py; docs/pricing.md works an
    example of each charge model. -#}
with meter_usage as (
    select * from {{ ref('int_meter_usage_daily') }}
),

plan_days as (
    select * from {{ ref('int_customer_plan_days') }}
),

charges as (
    select * from {{ ref('price_book_charges') }}
),

usage_with_plan as (
    select
        meter_usage.customer_id,
        meter_usage.meter_id,
        meter_usage.usage_date,
        meter_usage.model,
        meter_usage.quantity_units,
        meter_usage.event_count,
        plan_days.plan_id,
        plan_days.subscription_id,
        meter_usage.billing_period_start_date
    from meter_usage
    left join plan_days
        on meter_usage.customer_id = plan_days.customer_id
        and meter_usage.usage_date >= plan_days.valid_from_date
        and meter_usage.usage_date < plan_days.valid_to_date
),

period_to_date as (
    select
        *,
        sum(quantity_units) over (
            partition by customer_id, meter_id, billing_period_start_date
            order by usage_date
            rows between unbounded preceding and current row
        ) as period_to_date_units,
        sum(event_count) over (
            partition by customer_id, meter_id, billing_period_start_date
            order by usage_date
            rows between unbounded preceding and current row
        ) as period_to_date_events
    from usage_with_plan
),

charges_in_force as (
    {#- Each charge with the day its successor takes over (end exclusive; null: still in force). -#}
    select
        *,
        lead(effective_from) over (
            partition by plan_id, meter_id order by effective_from
        ) as effective_to
    from charges
),

positioned as (
    select
        period_to_date.*,
        charges_in_force.effective_from as charge_effective_from,
        charges_in_force.currency,
        charges_in_force.charge_model,
        charges_in_force.included_units,
        charges_in_force.unit_price_minor,
        charges_in_force.package_size_units,
        charges_in_force.package_price_minor,
        charges_in_force.percentage_rate,
        charges_in_force.fixed_fee_minor,
        -- Billable units through the day, and through the day before (allowance deducted).
        greatest(period_to_date.period_to_date_units - charges_in_force.included_units, 0)
            as billable_units,
        greatest(
            period_to_date.period_to_date_units - period_to_date.quantity_units
                - charges_in_force.included_units,
            0
        ) as prior_billable_units,
        period_to_date.period_to_date_events - period_to_date.event_count as prior_events
    from period_to_date
    left join charges_in_force
        on period_to_date.plan_id = charges_in_force.plan_id
        and period_to_date.meter_id = charges_in_force.meter_id
        and period_to_date.usage_date >= charges_in_force.effective_from
        and (
            charges_in_force.effective_to is null
            or period_to_date.usage_date < charges_in_force.effective_to
        )
),

{{ charge_valuation('positioned', [
    ('billable_units', 'period_to_date_events', 'period_to_date_amount_minor_exact'),
    ('prior_billable_units', 'prior_events', 'prior_period_to_date_amount_minor_exact'),
]) }},

final as (
    select
        customer_id,
        meter_id,
        usage_date,
        model,
        plan_id,
        subscription_id,
        quantity_units,
        event_count,
        -- The unit price of a per-unit charge; the other models have no single unit price.
        case when charge_model = 'per_unit' then unit_price_minor end as unit_price_minor,
        cast(
            period_to_date_amount_minor_exact - prior_period_to_date_amount_minor_exact
            as {{ money_type() }}
        ) as amount_minor_exact,
        currency,
        charge_model is not null as is_priced,
        billing_period_start_date,
        charge_model,
        charge_effective_from,
        included_units,
        period_to_date_units,
        period_to_date_amount_minor_exact,
        prior_period_to_date_amount_minor_exact
    from valued
)

select * from final

-- Per invoice line (customer, billing period, meter): the usage amount, the credit grants
-- applied to it and what is left to pay. Credit is rounded per line with the one rounding rule;
-- a line's credit never exceeds its exact usage, and rounding half away from zero keeps that
-- order, so the amount due is never negative.
with credit_per_line as (
    select
        customer_id,
        billing_period_start_date,
        meter_id,
        currency,
        sum(credit_applied_minor_exact) as credit_applied_minor_exact,
        count(distinct grant_id) as grants
    from {{ ref('stg_billing__credit_applications') }}
    group by customer_id, billing_period_start_date, meter_id, currency
),

final as (
    select
        lines.customer_id,
        lines.billing_period_start_date,
        lines.meter_id,
        lines.currency,
        lines.amount_minor_exact as usage_amount_minor_exact,
        lines.amount_minor as usage_amount_minor,
        cast(coalesce(credit.credit_applied_minor_exact, 0) as {{ money_type() }})
            as credit_applied_minor_exact,
        {{ round_to_minor_units('coalesce(credit.credit_applied_minor_exact, 0)') }}
            as credit_applied_minor,
        lines.amount_minor
            - {{ round_to_minor_units('coalesce(credit.credit_applied_minor_exact, 0)') }}
            as amount_due_minor,
        coalesce(credit.grants, 0) as grants
    from {{ ref('invoice_lines') }} as lines
    left join credit_per_line as credit
        on credit.customer_id = lines.customer_id
        and credit.billing_period_start_date = lines.billing_period_start_date
        and credit.meter_id = lines.meter_id
        and credit.currency = lines.currency
    where lines.line_type = 'usage'
)

select * from final

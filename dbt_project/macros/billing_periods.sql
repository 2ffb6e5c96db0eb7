{#- Billing periods that follow a billing-cycle anchor, as Stripe's do: a period begins on the
    anchor's day of the month, or on the month's last day when the month is shorter (an anchor
    on the 31st bills on 30 April and 28 February, then on 31 March again), at 00:00 UTC.
    `anchor_day` is 1-31; 1 gives calendar months. Plain SQL on dates, no dbt calls, so that
    tests/rating/test_billing_periods.py renders these macros and checks them against the Python
    reference (pricing/periods.py). docs/pricing.md, Billing periods. -#}

{#- The anchor's day in the month that begins on `month_start` (a date on the 1st). -#}
{% macro anchored_day_of_month(month_start, anchor_day) -%}
    cast(
        cast({{ month_start }} as date)
        + cast(least({{ anchor_day }}, day(last_day(cast({{ month_start }} as date)))) - 1 as integer)
        as date
    )
{%- endmacro %}

{#- The first day of the billing period that contains the date `day`. -#}
{% macro billing_period_start(day, anchor_day) -%}
    case
        when day({{ day }}) >= least({{ anchor_day }}, day(last_day(cast({{ day }} as date))))
            then {{ anchored_day_of_month("date_trunc('month', cast(" ~ day ~ " as date))", anchor_day) }}
        else {{ anchored_day_of_month("date_trunc('month', cast(" ~ day ~ " as date)) - interval 1 month", anchor_day) }}
    end
{%- endmacro %}

{#- The first day of the billing period `months` periods after the one that begins on
    `period_start` (`months` may be an expression; 1 gives the period's end, exclusive). -#}
{% macro billing_period_after(period_start, anchor_day, months=1) -%}
    {{ anchored_day_of_month("date_trunc('month', cast(" ~ period_start ~ " as date)) + to_months(cast(" ~ months ~ " as integer))", anchor_day) }}
{%- endmacro %}

/*
kind = "report"
title = "DORA metrics"
description = """
The five DORA metrics over production deployments, overall and per service, for the whole
history, per ISO week and per calendar month, each with a 95% confidence interval and the
performance tier of the DORA research clusters (elite, high, medium, low).

- deployment_frequency: production deployments per day of the period the history covers. The
  interval is Poisson, (sqrt(n) - 0.98)^2 to (sqrt(n + 1) + 0.98)^2 deployments.
- lead_time: median hours from merge to the end of the first successful production deployment
  carrying the change, over changes delivered in the period (dora_changes).
- change_failure_rate: share of deployments that failed, were rolled back or caused an
  incident (dora_deployments); Wilson score interval.
- recovery_time: median hours to recover from a failed deployment that started in the period.
- rework_rate: share of deployments made only of bug fixes; Wilson score interval.
- performance_tier: one row per scope and period holding the lowest tier of the four metrics
  that have tiers (rework rate has none).

Medians carry the distribution-free interval of order statistics: ranks n/2 - 0.98 sqrt(n) and
1 + n/2 + 0.98 sqrt(n). Tiers (per day, hours, share): frequency elite >= 1, high >= 1/7,
medium >= 1/30; lead time elite < 24, high < 168, medium < 720; change failure rate elite
<= 0.05, high <= 0.10, medium <= 0.15; recovery elite < 1, high < 24, medium < 168.
A period without a production deployment (or a delivered change) has no row for it."""
after = ["dora_deployments", "dora_changes"]

[[columns]]
name = "grain"
doc = "all (the whole history), month or week."
[[columns]]
name = "period"
doc = "all, YYYY-MM, or the ISO week YYYY-Www."
[[columns]]
name = "period_start"
doc = "First instant of the period, or of the history for grain all (UTC)."
[[columns]]
name = "service"
doc = "The service, or all for every service together."
[[columns]]
name = "metric"
doc = "deployment_frequency, lead_time, change_failure_rate, recovery_time, rework_rate or performance_tier."
[[columns]]
name = "value"
doc = "The metric in its unit; null for performance_tier."
[[columns]]
name = "unit"
doc = "per_day, hours, share, or tier for performance_tier."
[[columns]]
name = "samples"
doc = "Deployments, changes or failures the value is computed from."
[[columns]]
name = "ci_low"
doc = "Lower end of the 95% confidence interval."
[[columns]]
name = "ci_high"
doc = "Upper end of the 95% confidence interval."
[[columns]]
name = "tier"
doc = "elite, high, medium or low; null for rework_rate."
*/
with history as (
    select
        date_trunc('day', min(started_at)) as first_day,
        date_trunc('day', max(started_at)) + interval '1 day' as end_day
    from dora_deployments
),

grains as (
    select column1 as grain from (values ('all'), ('month'), ('week'))
),

scopes as (
    select column1 as scope from (values ('overall'), ('service'))
),

-- Every event once per grain and scope it counts in: `at` places it in a period.
events as (
    select 'deployment' as event, service, started_at as at, cast(is_failure as int) as hit,
        cast(is_rework as int) as rework, cast(null as double) as hours
    from dora_deployments
    union all
    select 'failure', service, started_at, 0, 0, recovery_hours
    from dora_deployments
    where is_failure and recovery_hours is not null
    union all
    select 'change', service, deployed_at, 0, 0, lead_time_hours
    from dora_changes
    where deployed_at is not null
),

placed as (
    select
        events.event,
        events.hit,
        events.rework,
        events.hours,
        grains.grain,
        case when scopes.scope = 'overall' then 'all' else events.service end as service,
        case grains.grain
            when 'all' then history.first_day
            when 'month' then date_trunc('month', events.at)
            else date_trunc('week', events.at)
        end as period_start
    from events
    cross join grains
    cross join scopes
    cross join history
),

-- Periods are named only once counted (in `final`): formatting a date per event took longer
-- than the counting.
periods as (
    select
        placed.*,
        case grain
            when 'all' then history.end_day
            when 'month' then period_start + interval '1 month'
            else period_start + interval '7 days'
        end as period_end,
        history.first_day,
        history.end_day
    from placed
    cross join history
),

deployment_counts as (
    select
        grain, period_start, service,
        count(*) as n,
        sum(hit) as failures,
        sum(rework) as reworks,
        -- Days of the period the history covers: edge periods are partial.
        (to_unixtime(least(max(period_end), max(end_day)))
            - to_unixtime(greatest(period_start, max(first_day)))) / 86400.0 as days
    from periods
    where event = 'deployment'
    group by grain, period_start, service
),

ranked as (
    select
        grain, period_start, service, event, hours,
        row_number() over (
            partition by grain, period_start, service, event order by hours
        ) as rank,
        count(*) over (partition by grain, period_start, service, event) as n
    from periods
    where event in ('change', 'failure')
),

medians as (
    select
        grain, period_start, service,
        case event when 'change' then 'lead_time' else 'recovery_time' end as metric,
        median(hours) as value,
        max(n) as n,
        min(case when rank = greatest(1, floor(n / 2.0 - 0.98 * sqrt(n))) then hours end) as ci_low,
        min(case when rank = least(n, ceil(1 + n / 2.0 + 0.98 * sqrt(n))) then hours end) as ci_high
    from ranked
    group by grain, period_start, service, event
),

shares as (
    select grain, period_start, service, 'change_failure_rate' as metric, n,
        cast(failures as double) as hits
    from deployment_counts
    union all
    select grain, period_start, service, 'rework_rate', n, cast(reworks as double)
    from deployment_counts
),

metrics as (
    select
        grain, period_start, service,
        'deployment_frequency' as metric,
        n / days as value,
        'per_day' as unit,
        n as samples,
        power(greatest(sqrt(cast(n as double)) - 0.98, 0.0), 2) / days as ci_low,
        power(sqrt(cast(n as double) + 1) + 0.98, 2) / days as ci_high
    from deployment_counts
    union all
    select grain, period_start, service, metric, value, 'hours', n, ci_low, ci_high
    from medians
    union all
    -- Wilson score interval with z = 1.96 (z^2 = 3.8416).
    select
        grain, period_start, service, metric,
        hits / n,
        'share',
        n,
        (hits / n + 3.8416 / (2 * n)
            - 1.96 * sqrt(hits / n * (1 - hits / n) / n + 3.8416 / (4.0 * n * n)))
            / (1 + 3.8416 / n),
        (hits / n + 3.8416 / (2 * n)
            + 1.96 * sqrt(hits / n * (1 - hits / n) / n + 3.8416 / (4.0 * n * n)))
            / (1 + 3.8416 / n)
    from shares
),

tiered as (
    select
        metrics.*,
        case metric
            when 'deployment_frequency' then
                case when value >= 1 then 4 when value >= 1.0 / 7 then 3
                    when value >= 1.0 / 30 then 2 else 1 end
            when 'lead_time' then
                case when value < 24 then 4 when value < 168 then 3
                    when value < 720 then 2 else 1 end
            when 'change_failure_rate' then
                case when value <= 0.05 then 4 when value <= 0.10 then 3
                    when value <= 0.15 then 2 else 1 end
            when 'recovery_time' then
                case when value < 1 then 4 when value < 24 then 3
                    when value < 168 then 2 else 1 end
        end as tier_rank
    from metrics
),

with_overall as (
    select grain, period_start, service, metric, value, unit, samples, ci_low, ci_high,
        tier_rank
    from tiered
    union all
    select grain, period_start, service, 'performance_tier', cast(null as double),
        'tier', cast(null as bigint), cast(null as double), cast(null as double), min(tier_rank)
    from tiered
    where tier_rank is not null
    group by grain, period_start, service
),

final as (
    select
        grain,
        case grain
            when 'all' then 'all'
            when 'month' then to_char(period_start, '%Y-%m')
            else to_char(period_start, '%G-W%V')
        end as period,
        period_start, service, metric, value, unit,
        cast(samples as bigint) as samples, ci_low, ci_high,
        case tier_rank when 4 then 'elite' when 3 then 'high' when 2 then 'medium'
            when 1 then 'low' end as tier
    from with_overall
)

select * from final order by grain, period_start, service, metric

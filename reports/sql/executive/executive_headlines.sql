/*
kind = "report"
title = "Headline numbers of the executive report"
description = """
Every headline number of the executive report for the report's period, beside the same number
for the period before it (same length, just before). Delivery comes from dora_deployments and
dora_changes, reliability from slo_events and slo_alerts, compliance from compliance_results
(findings dated in the period, and undated ones), risk from risk_verdicts and test selection from
test_selection_replay where those have been computed. A number with nothing to compute it from
is null, never zero by default."""
after = ["dora_deployments", "dora_changes", "slo_events", "slo_alerts", "compliance_results"]

[[columns]]
name = "section"
doc = "delivery, reliability, compliance, risk or tests."
[[columns]]
name = "metric"
doc = "Stable name of the number."
[[columns]]
name = "label"
doc = "What a reader sees."
[[columns]]
name = "unit"
doc = "count, per_day, hours or share."
[[columns]]
name = "value"
doc = "The number for the period."
[[columns]]
name = "previous_value"
doc = "The number for the period before."
[[columns]]
name = "change"
doc = "value - previous_value."
[[columns]]
name = "higher_is_better"
doc = "Whether a rise is good news."
[[columns]]
name = "source"
doc = "The report tables the number is computed from."
[[columns]]
name = "position"
doc = "Order of the number in the report."
*/
with params as (
    select period_start, period_end, previous_start, previous_end from report_params
),

periods as (
    select 'current' as which, period_start as starts, period_end as ends from params
    union all
    select 'previous', previous_start, previous_end from params
),

-- Each source's rows labelled with the period they fall in (equi-joins on `which` below, so
-- no range join runs over large tables).
deployments_in as (
    select
        case when d.started_at >= p.period_start and d.started_at < p.period_end then 'current'
            when d.started_at >= p.previous_start and d.started_at < p.previous_end then 'previous'
        end as which,
        d.*
    from dora_deployments d
    cross join params p
),

deployment_numbers as (
    select
        periods.which,
        cast(count(d.deployment_id) as double) as deployments,
        count(d.deployment_id) / ((to_unixtime(max(periods.ends)) - to_unixtime(max(periods.starts))) / 86400.0)
            as per_day,
        case when count(d.deployment_id) > 0
            then avg(case when d.is_failure then 1.0 else 0.0 end) end as failure_rate,
        case when count(d.deployment_id) > 0
            then avg(case when d.is_rework then 1.0 else 0.0 end) end as rework_rate,
        median(d.recovery_hours) as recovery_hours
    from periods
    left join deployments_in d on d.which = periods.which
    group by periods.which
),

lead_times as (
    select periods.which, median(c.lead_time_hours) as lead_hours
    from periods
    left join (
        select
            case when c.deployed_at >= p.period_start and c.deployed_at < p.period_end then 'current'
                when c.deployed_at >= p.previous_start and c.deployed_at < p.previous_end then 'previous'
            end as which,
            c.lead_time_hours
        from dora_changes c
        cross join params p
    ) c on c.which = periods.which
    group by periods.which
),

slo_periods as (
    select which, slo_id, sum(good) as good, sum(total) as total
    from (
        select
            case when e.at > p.period_start and e.at <= p.period_end then 'current'
                when e.at > p.previous_start and e.at <= p.previous_end then 'previous'
            end as which,
            e.*
        from slo_events e
        cross join params p
    )
    where which is not null
    group by which, slo_id
),

slo_numbers as (
    select
        periods.which,
        cast(count(s.slo_id) as double) as slos_with_traffic,
        cast(sum(case when s.good / s.total >= slos.objective then 1 else 0 end) as double) as slos_met,
        min(s.good / s.total) as worst_attainment
    from periods
    left join slo_periods s on s.which = periods.which and s.total > 0
    left join slos on slos.slo_id = s.slo_id
    group by periods.which
),

page_numbers as (
    select periods.which, cast(count(a.slo_id) as double) as pages
    from periods
    left join (
        select
            case when a.fired_at >= p.period_start and a.fired_at < p.period_end then 'current'
                when a.fired_at >= p.previous_start and a.fired_at < p.previous_end then 'previous'
            end as which,
            a.slo_id
        from slo_alerts a
        cross join params p
        where a.severity = 'page'
    ) a on a.which = periods.which
    group by periods.which
),

-- Undated findings (the state of the audit chain, of SLOs) count in both periods.
compliance_numbers as (
    select
        periods.which,
        cast(sum(case when r.status = 'alarm' then 1 else 0 end) as double) as alarms,
        cast(sum(case when r.status = 'waived' then 1 else 0 end) as double) as waived,
        case when sum(case when r.status in ('ok', 'alarm', 'waived') then 1 else 0 end) > 0 then
            cast(sum(case when r.status in ('ok', 'waived') then 1 else 0 end) as double)
            / sum(case when r.status in ('ok', 'alarm', 'waived') then 1 else 0 end) end as posture
    from periods
    left join compliance_results r
        on r.at is null or (r.at >= periods.starts and r.at < periods.ends)
    group by periods.which
),

risk_numbers as (
    select
        periods.which,
        case when count(v.deployment_id) > 0 then
            cast(sum(case when v.decision <> 'allow' then 1 else 0 end) as double) / count(v.deployment_id)
        end as guarded_share
    from periods
    left join (
        select
            case when v.started_at >= p.period_start and v.started_at < p.period_end then 'current'
                when v.started_at >= p.previous_start and v.started_at < p.previous_end then 'previous'
            end as which,
            v.deployment_id,
            v.decision
        from risk_verdicts v
        cross join params p
    ) v on v.which = periods.which
    group by periods.which
),

replay_changes as (
    select
        which,
        change_id,
        sum(case when outcome in ('failed', 'error') then 1 else 0 end) as failing,
        sum(case when outcome in ('failed', 'error') and selected then 1 else 0 end) as caught,
        sum(duration_s) as suite_s,
        sum(case when selected then duration_s else 0 end) as selected_s
    from (
        select
            case when r.started_at >= p.period_start and r.started_at < p.period_end then 'current'
                when r.started_at >= p.previous_start and r.started_at < p.previous_end then 'previous'
            end as which,
            r.*
        from test_selection_replay r
        cross join params p
        where r.policy = 'model'
    )
    where which is not null
    group by which, change_id
),

test_numbers as (
    select
        periods.which,
        case when sum(c.suite_s) > 0 then 1 - sum(c.selected_s) / sum(c.suite_s) end as time_saved,
        case when sum(case when c.failing > 0 then 1 else 0 end) > 0 then
            cast(sum(case when c.caught > 0 then 1 else 0 end) as double)
            / sum(case when c.failing > 0 then 1 else 0 end) end as failing_caught
    from periods
    left join replay_changes c on c.which = periods.which
    group by periods.which
),

numbers as (
    select 'delivery' as section, 'deployments' as metric, 'Production deployments' as label,
        'count' as unit, which, deployments as value, true as higher_is_better,
        'dora_deployments' as source, 1 as position
    from deployment_numbers
    union all
    select 'delivery', 'deployment_frequency', 'Deployments per day', 'per_day', which, per_day,
        true, 'dora_deployments', 2 from deployment_numbers
    union all
    select 'delivery', 'lead_time', 'Median lead time, merge to production', 'hours', which,
        lead_hours, false, 'dora_changes', 3 from lead_times
    union all
    select 'delivery', 'change_failure_rate', 'Change failure rate', 'share', which,
        failure_rate, false, 'dora_deployments', 4 from deployment_numbers
    union all
    select 'delivery', 'recovery_time', 'Median recovery time from a failed deployment', 'hours',
        which, recovery_hours, false, 'dora_deployments', 5 from deployment_numbers
    union all
    select 'delivery', 'rework_rate', 'Rework rate (deployments made only of fixes)', 'share', which,
        rework_rate, false, 'dora_deployments', 6 from deployment_numbers
    union all
    select 'reliability', 'slos_met', 'SLOs met over the period', 'count', which, slos_met, true,
        'slo_events', 7 from slo_numbers
    union all
    select 'reliability', 'slos_with_traffic', 'SLOs with traffic', 'count', which,
        slos_with_traffic, true, 'slo_events', 8 from slo_numbers
    union all
    select 'reliability', 'worst_attainment', 'Lowest SLO attainment', 'share', which,
        worst_attainment, true, 'slo_events', 9 from slo_numbers
    union all
    select 'reliability', 'pages', 'Burn-rate pages', 'count', which, pages, false,
        'slo_alerts', 10 from page_numbers
    union all
    select 'compliance', 'alarms', 'Compliance alarms', 'count', which, alarms, false,
        'compliance_results', 11 from compliance_numbers
    union all
    select 'compliance', 'waived', 'Alarms under a waiver', 'count', which, waived, false,
        'compliance_results', 12 from compliance_numbers
    union all
    select 'compliance', 'posture', 'Compliance posture (checks passing)', 'share', which,
        posture, true, 'compliance_results', 13 from compliance_numbers
    union all
    select 'risk', 'guarded_share', 'Deployments sent to canary or held by the risk model',
        'share', which, guarded_share, false, 'risk_verdicts', 14 from risk_numbers
    union all
    select 'tests', 'test_time_saved', 'Test time saved by test selection', 'share', which,
        time_saved, true, 'test_selection_replay', 15 from test_numbers
    union all
    select 'tests', 'failing_changes_caught', 'Failing changes caught by the selected tests',
        'share', which, failing_caught, true, 'test_selection_replay', 16 from test_numbers
),

final as (
    select
        current_period.section,
        current_period.metric,
        current_period.label,
        current_period.unit,
        current_period.value,
        previous_period.value as previous_value,
        current_period.value - previous_period.value as change,
        current_period.higher_is_better,
        current_period.source,
        current_period.position
    from numbers current_period
    join numbers previous_period
        on previous_period.metric = current_period.metric and previous_period.which = 'previous'
    where current_period.which = 'current'
)

select * from final order by position

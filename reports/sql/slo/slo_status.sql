/*
kind = "report"
title = "SLO attainment and error budgets"
description = """
Each SLO as of the report's date: its window (rolling: the last 7d, 28d, 30d... up to the as-of
instant; calendar: the current day, week, month, quarter or year so far), attainment, and the
error budget in events (Occurrences) or slices (Timeslices). A timeslice is good when its share
of good events reaches the SLO's timeSliceTarget; slices without traffic do not count. The
budget is (1 - objective) of the events or slices seen so far; consumed is the bad ones. The
projected exhaustion date extrapolates the last day's consumption; it is null when the budget
is not being consumed or is already spent. status: no_data (no traffic in the window), breached
(attainment below the objective), at_risk (under a quarter of the budget left) or met. Every
ratio is null, never NaN or infinite, where there is nothing to divide by."""
after = ["slo_events"]

[[columns]]
name = "slo_id"
doc = "The SLO."
[[columns]]
name = "service"
doc = "Its service."
[[columns]]
name = "indicator_kind"
doc = "ratio or threshold."
[[columns]]
name = "budgeting_method"
doc = "Occurrences or Timeslices."
[[columns]]
name = "window"
doc = "The window as declared, such as 28d or 1M."
[[columns]]
name = "is_rolling"
doc = "Rolling (true) or calendar (false) window."
[[columns]]
name = "window_start"
doc = "First instant of the window (UTC)."
[[columns]]
name = "window_end"
doc = "The as-of instant: the window runs to here (UTC)."
[[columns]]
name = "objective"
doc = "Target attainment, 0..1."
[[columns]]
name = "unit"
doc = "events or slices: what good, total and the budget count."
[[columns]]
name = "good"
doc = "Good events or slices in the window."
[[columns]]
name = "total"
doc = "Events, or slices with traffic, in the window."
[[columns]]
name = "attainment"
doc = "good / total; null without traffic."
[[columns]]
name = "error_budget_total"
doc = "(1 - objective) * total."
[[columns]]
name = "error_budget_consumed"
doc = "Bad events or slices: total - good."
[[columns]]
name = "error_budget_remaining"
doc = "Budget total minus consumed; negative once overspent."
[[columns]]
name = "error_budget_remaining_share"
doc = "Remaining over total budget; null without budget."
[[columns]]
name = "burn_rate_1d"
doc = "Bad share of the last day's events over (1 - objective): 1 spends the budget exactly over the window."
[[columns]]
name = "projected_exhaustion_at"
doc = "When the remaining budget runs out at the last day's rate (UTC); null if not being consumed, already spent, or more than ten years away."
[[columns]]
name = "status"
doc = "no_data, breached, at_risk or met."
*/
with params as (
    select as_of, to_unixtime(as_of) as as_of_s from report_params
),

shaped as (
    select
        slos.*,
        cast(regexp_replace(slos.window, '[^0-9]', '', 'g') as bigint) as window_count,
        regexp_replace(slos.window, '[0-9]', '', 'g') as window_unit,
        case regexp_replace(coalesce(slos.time_slice_window, ''), '[0-9]', '', 'g')
            when 's' then 1 when 'm' then 60 when 'h' then 3600 when 'd' then 86400
        end * cast(nullif(regexp_replace(coalesce(slos.time_slice_window, ''), '[^0-9]', '', 'g'), '') as bigint)
            as slice_seconds
    from slos
),

windows as (
    select
        shaped.*,
        params.as_of,
        params.as_of_s,
        case
            when is_rolling then params.as_of_s - window_count * case window_unit
                when 'm' then 60 when 'h' then 3600 when 'd' then 86400 when 'w' then 604800
                when 'M' then 2592000 when 'Q' then 7776000 when 'Y' then 31536000 end
            -- Calendar windows: the current day, week, month, quarter or year so far.
            when window_unit = 'd' then to_unixtime(date_trunc('day', params.as_of - interval '1 microsecond'))
            when window_unit = 'w' then to_unixtime(date_trunc('week', params.as_of - interval '1 microsecond'))
            when window_unit = 'M' then to_unixtime(date_trunc('month', params.as_of - interval '1 microsecond'))
            when window_unit = 'Q' then to_unixtime(date_trunc('quarter', params.as_of - interval '1 microsecond'))
            when window_unit = 'Y' then to_unixtime(date_trunc('year', params.as_of - interval '1 microsecond'))
        end as window_start_s
    from shaped
    cross join params
),

in_window as (
    select
        windows.slo_id,
        windows.slice_seconds,
        windows.time_slice_target,
        events.at,
        events.good,
        events.total,
        to_unixtime(events.at) > windows.as_of_s - 86400 as is_last_day
    from slo_events events
    join windows on windows.slo_id = events.slo_id
    where to_unixtime(events.at) > windows.window_start_s
        and to_unixtime(events.at) <= windows.as_of_s
),

occurrences as (
    select
        slo_id,
        sum(good) as good,
        sum(total) as total,
        sum(case when is_last_day then total - good else 0 end) as bad_last_day,
        sum(case when is_last_day then total else 0 end) as total_last_day
    from in_window
    group by slo_id
),

slices as (
    select
        slo_id,
        cast(floor((to_unixtime(at) - 0.000001) / slice_seconds) as bigint) as slice,
        max(time_slice_target) as time_slice_target,
        bool_or(is_last_day) as is_last_day,
        sum(good) as good,
        sum(total) as total
    from in_window
    where slice_seconds is not null
    group by 1, 2
),

slice_counts as (
    select
        slo_id,
        cast(sum(case when good / total >= time_slice_target then 1 else 0 end) as double) as good,
        cast(count(*) as double) as total,
        cast(sum(case when is_last_day and good / total < time_slice_target then 1 else 0 end)
            as double) as bad_last_day,
        cast(sum(case when is_last_day then 1 else 0 end) as double) as total_last_day
    from slices
    where total > 0
    group by slo_id
),

counted as (
    select
        windows.slo_id,
        windows.service,
        windows.indicator_kind,
        windows.budgeting_method,
        windows.window,
        windows.is_rolling,
        windows.window_start_s,
        windows.as_of,
        windows.objective,
        case when windows.budgeting_method = 'Timeslices' then 'slices' else 'events' end as unit,
        coalesce(case when windows.budgeting_method = 'Timeslices' then slice_counts.good
            else occurrences.good end, 0) as good,
        coalesce(case when windows.budgeting_method = 'Timeslices' then slice_counts.total
            else occurrences.total end, 0) as total,
        coalesce(case when windows.budgeting_method = 'Timeslices' then slice_counts.bad_last_day
            else occurrences.bad_last_day end, 0) as bad_last_day,
        coalesce(case when windows.budgeting_method = 'Timeslices' then slice_counts.total_last_day
            else occurrences.total_last_day end, 0) as total_last_day
    from windows
    left join occurrences on occurrences.slo_id = windows.slo_id
    left join slice_counts on slice_counts.slo_id = windows.slo_id
),

budgets as (
    select
        counted.*,
        (1 - objective) * total as budget,
        total - good as consumed,
        (1 - objective) * total - (total - good) as remaining
    from counted
),

final as (
    select
        slo_id,
        service,
        indicator_kind,
        budgeting_method,
        window,
        is_rolling,
        arrow_cast(to_timestamp_micros(cast(window_start_s * 1000000 as bigint)),
            'Timestamp(Microsecond, Some("UTC"))') as window_start,
        as_of as window_end,
        objective,
        unit,
        good,
        total,
        case when total > 0 then good / total end as attainment,
        budget as error_budget_total,
        consumed as error_budget_consumed,
        remaining as error_budget_remaining,
        case when budget > 0 then remaining / budget end as error_budget_remaining_share,
        case when total_last_day > 0 and objective < 1
            then bad_last_day / total_last_day / (1 - objective) end as burn_rate_1d,
        -- Beyond ten years a projection says nothing: left null.
        case when remaining > 0 and bad_last_day > 0 and remaining / bad_last_day < 3650
            then arrow_cast(to_timestamp_micros(cast(
                (to_unixtime(as_of) + remaining / bad_last_day * 86400) * 1000000 as bigint)),
                'Timestamp(Microsecond, Some("UTC"))')
        end as projected_exhaustion_at,
        case
            when total = 0 then 'no_data'
            when good / total < objective then 'breached'
            when budget > 0 and remaining / budget < 0.25 then 'at_risk'
            else 'met'
        end as status
    from budgets
)

select * from final order by slo_id

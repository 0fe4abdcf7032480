/*
kind = "report"
title = "Burn-rate alerts over history"
description = """
When each multi-window, multi-burn-rate alert would have fired, replayed over the whole
history: an alert fires while the burn rate (bad share of events over 1 - objective) exceeds
its factor over both its long and its short window. Rules: 1h and 5m at 14.4x and 6h and 30m at
6x page; 1d and 2h at 3x and 3d and 6h at 1x open a ticket. Alerts are evaluated at the end of
every five-minute bin with traffic, so a window shorter than the data's step sees the last
point. One row per firing episode: from the first evaluation that fired to the first that did
not (null while still firing at the as-of instant)."""
after = ["slo_events"]

[[columns]]
name = "slo_id"
doc = "The SLO."
[[columns]]
name = "service"
doc = "Its service."
[[columns]]
name = "rule"
doc = "The alert rule, named by its windows and factor, such as 1h/5m@14.4x."
[[columns]]
name = "severity"
doc = "page or ticket."
[[columns]]
name = "burn_factor"
doc = "The burn rate both windows must exceed."
[[columns]]
name = "fired_at"
doc = "First evaluation at which the alert fired (UTC)."
[[columns]]
name = "resolved_at"
doc = "First evaluation after it at which it no longer fired (UTC); null if still firing."
[[columns]]
name = "duration_minutes"
doc = "Minutes from fired_at to resolved_at, or to the as-of instant while still firing."
[[columns]]
name = "peak_burn_rate"
doc = "Highest long-window burn rate while firing."
*/
with rules as (
    select column1 as rule, column2 as severity, column3 as burn_factor,
        column4 as long_seconds, column5 as short_seconds
    from (values
        ('1h/5m@14.4x', 'page', 14.4, 3600, 300),
        ('6h/30m@6x', 'page', 6.0, 21600, 1800),
        ('1d/2h@3x', 'ticket', 3.0, 86400, 7200),
        ('3d/6h@1x', 'ticket', 1.0, 259200, 21600))
),

-- SLOs numbered, so that the windows below carry and sort a number and the bins' seconds rather
-- than texts and timestamps: they hold every bin of the history at once.
numbered as (
    select slo_id, objective, row_number() over (order by slo_id) as slo_number
    from slos
    where objective < 1
),

series as (
    select
        numbered.slo_number,
        cast(to_unixtime(slo_events.at) as bigint) as t,
        slo_events.total - slo_events.good as bad,
        slo_events.total,
        numbered.objective
    from slo_events
    join numbered on numbered.slo_id = slo_events.slo_id
),

-- Burn rates over the trailing windows (t - w, t], w in seconds: the share of bad events with
-- Maestro's trailing_ratio (a ratio of sums over a RANGE frame of w - 1 preceding, many times
-- faster, in one column), over the share the objective allows. Events come in five-minute bins,
-- so the 5m window is the bin itself. The evaluations before and after each one are taken in
-- the same ordered pass, so episodes can be found among the firing rows alone.
burns as (
    select
        slo_number, t,
        coalesce(case when total > 0 then bad / total end, 0) / (1 - objective) as burn_5m,
        coalesce(trailing_ratio(bad, total, t, 1800) over bins, 0) / (1 - objective) as burn_30m,
        coalesce(trailing_ratio(bad, total, t, 3600) over bins, 0) / (1 - objective) as burn_1h,
        coalesce(trailing_ratio(bad, total, t, 7200) over bins, 0) / (1 - objective) as burn_2h,
        coalesce(trailing_ratio(bad, total, t, 21600) over bins, 0) / (1 - objective) as burn_6h,
        coalesce(trailing_ratio(bad, total, t, 86400) over bins, 0) / (1 - objective) as burn_1d,
        coalesce(trailing_ratio(bad, total, t, 259200) over bins, 0) / (1 - objective) as burn_3d,
        lag(t) over bins as previous_t,
        lead(t) over bins as next_t
    from series
    window bins as (partition by slo_number order by t)
),

-- Only the evaluations at which a rule fired: a small share of all of them.
firing as (
    select
        burns.slo_number,
        burns.t,
        burns.previous_t,
        burns.next_t,
        rules.rule,
        rules.severity,
        rules.burn_factor,
        case rules.long_seconds
            when 3600 then burn_1h when 21600 then burn_6h when 86400 then burn_1d else burn_3d
        end as long_burn
    from burns
    cross join rules
    where case rules.long_seconds
            when 3600 then burn_1h when 21600 then burn_6h when 86400 then burn_1d else burn_3d
        end > rules.burn_factor
        and case rules.short_seconds
            when 300 then burn_5m when 1800 then burn_30m when 7200 then burn_2h else burn_6h
        end > rules.burn_factor
),

-- Consecutive firing evaluations form one episode: one starts where the rule's previous firing
-- evaluation is not the SLO's previous evaluation, and numbering the starts names each episode.
starts as (
    select
        firing.*,
        coalesce(lag(t) over (partition by slo_number, rule order by t) <> previous_t, true)
            as is_start
    from firing
),

islands as (
    select
        starts.*,
        sum(case when is_start then 1 else 0 end) over (
            partition by slo_number, rule order by t rows between unbounded preceding and current row
        ) as island
    from starts
),

episodes as (
    select
        slo_number,
        rule,
        max(severity) as severity,
        max(burn_factor) as burn_factor,
        min(t) as fired_t,
        -- The evaluation after the last firing one is the first that did not fire.
        last_value(next_t order by t) as resolved_t,
        max(long_burn) as peak_burn_rate
    from islands
    group by slo_number, rule, island
),

final as (
    select
        numbered.slo_id,
        slos.service,
        episodes.rule,
        episodes.severity,
        episodes.burn_factor,
        arrow_cast(episodes.fired_t * 1000000, 'Timestamp(µs, "UTC")') as fired_at,
        arrow_cast(episodes.resolved_t * 1000000, 'Timestamp(µs, "UTC")') as resolved_at,
        (coalesce(episodes.resolved_t, cast(to_unixtime((select as_of from report_params)) as bigint))
            - episodes.fired_t) / 60.0 as duration_minutes,
        episodes.peak_burn_rate
    from episodes
    join numbered on numbered.slo_number = episodes.slo_number
    join slos on slos.slo_id = numbered.slo_id
)

select * from final order by slo_id, fired_at, rule

/*
kind = "report"
title = "SLOs over the executive report's period"
description = """
Each SLO over the report's period (not its own window): attainment and the share of the
period's error budget consumed, (bad events / total events) / (1 - objective), so 100% means the
period spent exactly its budget. SLOs without traffic in the period have null figures."""
after = ["slo_events"]

[[columns]]
name = "slo_id"
doc = "The SLO."
[[columns]]
name = "service"
doc = "Its service."
[[columns]]
name = "objective"
doc = "Target attainment, 0..1."
[[columns]]
name = "good"
doc = "Good events in the period."
[[columns]]
name = "total"
doc = "Events in the period."
[[columns]]
name = "attainment"
doc = "good / total; null without traffic."
[[columns]]
name = "budget_consumed"
doc = "Share of the period's error budget consumed; null without traffic."
[[columns]]
name = "is_met"
doc = "Attainment reached the objective; null without traffic."
*/
with in_period as (
    select e.slo_id, sum(e.good) as good, sum(e.total) as total
    from slo_events e
    cross join report_params p
    where e.at > p.period_start and e.at <= p.period_end
    group by e.slo_id
),

final as (
    select
        slos.slo_id,
        slos.service,
        slos.objective,
        coalesce(in_period.good, 0) as good,
        coalesce(in_period.total, 0) as total,
        case when in_period.total > 0 then in_period.good / in_period.total end as attainment,
        case when in_period.total > 0 and slos.objective < 1
            then (in_period.total - in_period.good) / in_period.total / (1 - slos.objective)
        end as budget_consumed,
        case when in_period.total > 0 then in_period.good / in_period.total >= slos.objective end
            as is_met
    from slos
    left join in_period on in_period.slo_id = slos.slo_id
)

select * from final order by slo_id

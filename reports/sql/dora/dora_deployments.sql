/*
kind = "report"
title = "Production deployments for DORA"
description = """
One row per production deployment: whether it failed (it failed outright, was rolled back, or
caused an incident), when the service recovered from it, and whether it was rework: an
unplanned release made to fix, every change it carries being a bug fix (changes.fix). The other
DORA tables build on this one."""

[[columns]]
name = "deployment_id"
doc = "The deployment."
[[columns]]
name = "service"
doc = "The service deployed."
[[columns]]
name = "started_at"
doc = "When the deployment began (UTC)."
[[columns]]
name = "finished_at"
doc = "When it finished, failed or was rolled back (UTC); null while in progress."
[[columns]]
name = "outcome"
doc = "succeeded, failed or rolled_back; null while in progress."
[[columns]]
name = "changes"
doc = "Number of changes the deployment carried."
[[columns]]
name = "incidents"
doc = "Incidents attributed to the deployment."
[[columns]]
name = "is_failure"
doc = "It failed, was rolled back, or caused an incident."
[[columns]]
name = "recovered_at"
doc = "Failures only: the later of the deployment's end and the resolution of the last incident it caused (UTC)."
[[columns]]
name = "recovery_hours"
doc = "Failures only: hours from the deployment's start to recovered_at."
[[columns]]
name = "is_rework"
doc = "Every change it carried is marked as a bug fix."
*/
with production as (
    select deployment_id, service, started_at, finished_at, outcome, change_ids
    from deployments
    where environment in ('production', 'prod') and started_at is not null
),

caused as (
    select
        caused_by_deployment_id as deployment_id,
        count(*) as incidents,
        -- An incident still open leaves its deployment unrecovered.
        case when count(resolved_at) = count(*) then max(resolved_at) end as last_resolved_at
    from incidents
    where caused_by_deployment_id is not null
    group by caused_by_deployment_id
),

carried as (
    select deployment_id, unnest(change_ids) as change_id
    from production
),

rework as (
    select carried.deployment_id, bool_and(coalesce(changes.fix, false)) as is_rework
    from carried
    join changes on changes.change_id = carried.change_id
    group by carried.deployment_id
),

flagged as (
    select
        production.deployment_id,
        production.service,
        production.started_at,
        production.finished_at,
        production.outcome,
        cast(cardinality(production.change_ids) as bigint) as changes,
        coalesce(caused.incidents, 0) as incidents,
        production.outcome in ('failed', 'rolled_back') or coalesce(caused.incidents, 0) > 0
            as is_failure,
        caused.last_resolved_at,
        caused.incidents is not null as has_incident,
        coalesce(rework.is_rework, false) as is_rework
    from production
    left join caused on caused.deployment_id = production.deployment_id
    left join rework on rework.deployment_id = production.deployment_id
),

recovered as (
    select
        deployment_id,
        service,
        started_at,
        finished_at,
        outcome,
        changes,
        incidents,
        is_failure,
        case
            when not is_failure then null
            when has_incident and last_resolved_at is null then null
            when has_incident then greatest(coalesce(finished_at, last_resolved_at), last_resolved_at)
            else finished_at
        end as recovered_at,
        is_rework
    from flagged
),

final as (
    select
        deployment_id,
        service,
        started_at,
        finished_at,
        outcome,
        changes,
        incidents,
        is_failure,
        recovered_at,
        (to_unixtime(recovered_at) - to_unixtime(started_at)) / 3600.0 as recovery_hours,
        is_rework
    from recovered
)

select * from final order by started_at, deployment_id

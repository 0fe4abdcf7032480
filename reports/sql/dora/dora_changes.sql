/*
kind = "report"
title = "Changes and the production deployment that delivered them"
description = """
One row per merged change: the first successful production deployment that carried it, and the
lead time from merge to that deployment's end. A change carried by several deployments counts
once, at the first; a deployment carrying several changes gives each its own lead time, so
squash merges and batched releases count right. Changes not yet delivered have no deployment."""

[[columns]]
name = "change_id"
doc = "The change."
[[columns]]
name = "service"
doc = "The service (repository) of the change."
[[columns]]
name = "merged_at"
doc = "When the change merged (UTC)."
[[columns]]
name = "deployment_id"
doc = "The first successful production deployment carrying it; null if none yet."
[[columns]]
name = "deployed_at"
doc = "When that deployment finished (UTC)."
[[columns]]
name = "lead_time_hours"
doc = "Hours from merge to deployed_at."
*/
with delivered as (
    select deployment_id, finished_at, unnest(change_ids) as change_id
    from deployments
    where environment in ('production', 'prod')
        and outcome = 'succeeded'
        and finished_at is not null
),

first_delivery as (
    select
        change_id,
        deployment_id,
        finished_at,
        row_number() over (partition by change_id order by finished_at, deployment_id) as nth
    from delivered
),

final as (
    select
        changes.change_id,
        changes.service,
        changes.merged_at,
        first_delivery.deployment_id,
        first_delivery.finished_at as deployed_at,
        (to_unixtime(first_delivery.finished_at) - to_unixtime(changes.merged_at)) / 3600.0
            as lead_time_hours
    from changes
    left join first_delivery
        on first_delivery.change_id = changes.change_id and first_delivery.nth = 1
)

select * from final order by merged_at, change_id

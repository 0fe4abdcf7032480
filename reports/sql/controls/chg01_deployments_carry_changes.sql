/*
kind = "control"
id = "CHG-01"
title = "Production deployments are traceable to merged changes"
description = "Every production deployment names the changes it carries, and each of them is a change merged before the deployment began."
severity = "medium"
soc2 = ["CC8.1"]
iso27001 = ["A.8.32", "A.8.9"]
gdpr = ["Art. 5(2)"]
*/
with carried as (
    select deployment_id, started_at, unnest(change_ids) as change_id
    from deployments
    where environment in ('production', 'prod')
),

traced as (
    select
        carried.deployment_id,
        count(*) as changes,
        sum(case when changes.change_id is null or changes.merged_at > carried.started_at
            then 1 else 0 end) as untraced
    from carried
    left join changes on changes.change_id = carried.change_id
    group by carried.deployment_id
),

final as (
    select
        deployments.deployment_id as resource,
        case when coalesce(traced.changes, 0) = 0 or traced.untraced > 0 then 'alarm' else 'ok' end
            as status,
        case
            when coalesce(traced.changes, 0) = 0 then 'carries no recorded change'
            when traced.untraced > 0 then cast(traced.untraced as varchar)
                || ' carried changes are unknown or merged after the deployment began'
            else cast(traced.changes as varchar) || ' merged changes'
        end as reason,
        deployments.started_at as at
    from deployments
    left join traced on traced.deployment_id = deployments.deployment_id
    where deployments.environment in ('production', 'prod')
)

select * from final

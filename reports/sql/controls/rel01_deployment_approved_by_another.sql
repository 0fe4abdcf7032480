/*
kind = "control"
id = "REL-01"
title = "Production deployments are approved by someone other than their author"
description = "Every production deployment names an approver who is not the person who initiated it (four-eyes principle)."
severity = "high"
soc2 = ["CC8.1"]
iso27001 = ["A.8.32", "A.5.3"]
gdpr = ["Art. 32(1)(d)"]
*/
with production as (
    select deployment_id, started_at, initiated_by, approved_by
    from deployments
    where environment in ('production', 'prod')
),

final as (
    select
        deployment_id as resource,
        case
            when approved_by is null then 'alarm'
            when initiated_by is not null and lower(approved_by) = lower(initiated_by) then 'alarm'
            else 'ok'
        end as status,
        case
            when approved_by is null then 'no approval recorded'
            when initiated_by is not null and lower(approved_by) = lower(initiated_by)
                then 'approved by its own author ' || approved_by
            else 'approved by ' || approved_by || ', initiated by ' || coalesce(initiated_by, 'unknown')
        end as reason,
        started_at as at
    from production
)

select * from final

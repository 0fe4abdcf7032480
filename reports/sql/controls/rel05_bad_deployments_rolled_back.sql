/*
kind = "control"
id = "REL-05"
title = "Deployments the rollback judge flagged were rolled back"
description = "Every production deployment the rollback judge says should roll back (rollback_verdicts) was rolled back."
severity = "high"
soc2 = ["CC7.4", "A1.2"]
iso27001 = ["A.5.26", "A.8.32"]
gdpr = ["Art. 32(1)(c)"]
*/
with final as (
    select
        deployment_id as resource,
        case when was_rolled_back then 'ok' else 'alarm' end as status,
        case when was_rolled_back
            then 'rolled back after ' || cast(round(rolled_back_after_minutes, 1) as varchar) || ' min'
            else 'not rolled back although the judge found: ' || reason
        end as reason,
        started_at as at
    from rollback_verdicts
    where should_roll_back and environment in ('production', 'prod')
)

select * from final

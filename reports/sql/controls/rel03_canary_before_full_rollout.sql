/*
kind = "control"
id = "REL-03"
title = "Canary deployments had a passing canary analysis before full rollout"
description = "A production deployment whose strategy is canary has a canary verdict (canary_verdicts); one that rolled out fully did so after a pass or marginal verdict."
severity = "medium"
soc2 = ["CC8.1", "A1.2"]
iso27001 = ["A.8.32"]
gdpr = ["Art. 32(1)(b)"]
*/
with canaries as (
    select deployment_id, started_at, outcome
    from deployments
    where environment in ('production', 'prod') and strategy = 'canary'
),

verdicts as (
    select deployment_id, max(verdict) as verdict
    from canary_verdicts
    group by deployment_id
),

final as (
    select
        canaries.deployment_id as resource,
        case
            when verdicts.verdict is null then 'alarm'
            when verdicts.verdict = 'fail' and canaries.outcome = 'succeeded' then 'alarm'
            when verdicts.verdict in ('no_data', 'insufficient_data') then 'info'
            else 'ok'
        end as status,
        case
            when verdicts.verdict is null then 'no canary analysis recorded'
            when verdicts.verdict = 'fail' and canaries.outcome = 'succeeded'
                then 'rolled out fully after a failing canary verdict'
            else 'canary verdict ' || verdicts.verdict || ', outcome ' || coalesce(canaries.outcome, 'in progress')
        end as reason,
        canaries.started_at as at
    from canaries
    left join verdicts on verdicts.deployment_id = canaries.deployment_id
)

select * from final

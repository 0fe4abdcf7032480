/*
kind = "control"
id = "REL-04"
title = "Deployments scored as risky went out behind a canary"
description = "A production deployment the risk model asked to canary or hold (risk_verdicts) used the canary strategy."
severity = "medium"
soc2 = ["CC8.1", "CC3.4"]
iso27001 = ["A.8.32", "A.5.7"]
gdpr = ["Art. 32(1)(b)"]
*/
with final as (
    select
        risk_verdicts.deployment_id as resource,
        case when coalesce(deployments.strategy, '') = 'canary' then 'ok' else 'alarm' end as status,
        'risk ' || cast(round(risk_verdicts.probability, 3) as varchar) || ' asked to '
            || risk_verdicts.decision || '; strategy ' || coalesce(deployments.strategy, 'not said')
            as reason,
        risk_verdicts.started_at as at
    from risk_verdicts
    join deployments on deployments.deployment_id = risk_verdicts.deployment_id
    where risk_verdicts.decision in ('allow_with_canary', 'hold')
        and deployments.environment in ('production', 'prod')
)

select * from final

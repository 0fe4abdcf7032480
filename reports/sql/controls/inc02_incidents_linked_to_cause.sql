/*
kind = "control"
id = "INC-02"
title = "Severe incidents name their cause"
description = "Each sev1 or sev2 incident resolved for more than a week names the deployment that caused it, or is marked as not caused by one; otherwise its post-incident review is missing evidence (info)."
severity = "low"
soc2 = ["CC7.4", "CC7.5"]
iso27001 = ["A.5.27"]
gdpr = ["Art. 33(5)"]
*/
with final as (
    select
        incident_id as resource,
        case when caused_by_deployment_id is not null then 'ok' else 'info' end as status,
        case when caused_by_deployment_id is not null
            then 'caused by deployment ' || caused_by_deployment_id
            else 'no cause recorded' end as reason,
        detected_at as at
    from incidents
    where severity in ('sev1', 'sev2')
        and resolved_at is not null
        and resolved_at < (select as_of from report_params) - interval '7 days'
)

select * from final

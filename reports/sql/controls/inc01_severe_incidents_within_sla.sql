/*
kind = "control"
id = "INC-01"
title = "Severe incidents are resolved within their SLA"
description = "sev1 incidents are resolved within 4 hours and sev2 within 24 hours of detection; one still open past its SLA at the as-of instant is an alarm."
severity = "high"
soc2 = ["CC7.4", "CC7.5"]
iso27001 = ["A.5.26", "A.5.29"]
gdpr = ["Art. 33", "Art. 32(1)(c)"]
*/
with severe as (
    select
        incident_id,
        severity,
        detected_at,
        resolved_at,
        case severity when 'sev1' then 4.0 else 24.0 end as sla_hours,
        (to_unixtime(coalesce(resolved_at, (select as_of from report_params)))
            - to_unixtime(detected_at)) / 3600.0 as hours
    from incidents
    where severity in ('sev1', 'sev2') and detected_at is not null
),

final as (
    select
        incident_id as resource,
        case when hours > sla_hours then 'alarm' else 'ok' end as status,
        severity || case when resolved_at is null then ' open for ' else ' resolved in ' end
            || cast(round(hours, 1) as varchar) || ' h (SLA ' || cast(sla_hours as varchar)
            || ' h)' as reason,
        detected_at as at
    from severe
)

select * from final

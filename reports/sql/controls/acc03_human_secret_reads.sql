/*
kind = "control"
id = "ACC-03"
title = "People do not read secrets"
description = """
Secrets are read by workloads, not people: a human read of a Kubernetes secret or of an AWS
Secrets Manager value is an alarm, or info when done under break-glass."""
severity = "high"
soc2 = ["CC6.1"]
iso27001 = ["A.5.17", "A.8.2"]
gdpr = ["Art. 32(1)(b)", "Art. 5(1)(f)"]
*/
with reads as (
    select event_id, at, actor, resource, canonical
    from audit_events
    where outcome = 'success'
        and ((source = 'kubernetes' and action in ('get', 'list', 'watch')
                and resource like 'secrets:%' and actor not like 'system:%')
            or (source = 'cloudtrail' and action = 'secretsmanager.amazonaws.com:GetSecretValue'
                and actor like '%:user/%'))
),

final as (
    select
        event_id as resource,
        case when canonical like '%"break-glass"%' then 'info' else 'alarm' end as status,
        actor || ' read ' || resource || ' at ' || to_char(at, '%Y-%m-%dT%H:%M:%SZ') as reason,
        at
    from reads
)

select * from final

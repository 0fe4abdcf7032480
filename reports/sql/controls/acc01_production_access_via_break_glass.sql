/*
kind = "control"
id = "ACC-01"
title = "Humans reach production only through break-glass"
description = """
A person (not a service account or a system identity) who execs into a pod, reads a secret or
deletes in a production namespace belongs to the break-glass group at the time (Kubernetes
audit `user.groups`, read from the record's canonical JSON)."""
severity = "high"
soc2 = ["CC6.1", "CC6.3"]
iso27001 = ["A.8.2", "A.5.15", "A.8.18"]
gdpr = ["Art. 32(1)(b)", "Art. 5(1)(f)"]
*/
with production_access as (
    select event_id, at, actor, action, resource, canonical
    from audit_events
    where source = 'kubernetes'
        and scope in ('production', 'prod')
        and actor not like 'system:%'
        and (resource like 'pods/exec:%' or resource like 'secrets:%' or action = 'delete')
        and outcome = 'success'
),

final as (
    select
        event_id as resource,
        case when canonical like '%"break-glass"%' then 'ok' else 'alarm' end as status,
        actor || ' ' || action || ' ' || resource || ' at '
            || to_char(at, '%Y-%m-%dT%H:%M:%SZ')
            || case when canonical like '%"break-glass"%' then ' as break-glass'
                else ' outside break-glass' end as reason,
        at
    from production_access
)

select * from final

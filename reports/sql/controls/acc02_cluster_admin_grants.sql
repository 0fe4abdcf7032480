/*
kind = "control"
id = "ACC-02"
title = "No one is granted cluster-admin"
description = "Every creation of a (cluster) role binding to the cluster-admin role is an alarm: standing cluster-wide privilege should not be granted to people."
severity = "critical"
soc2 = ["CC6.2", "CC6.3"]
iso27001 = ["A.8.2", "A.5.18"]
gdpr = ["Art. 32(1)(b)"]
*/
with grants as (
    select event_id, at, actor, resource, canonical
    from audit_events
    where source = 'kubernetes'
        and action in ('create', 'update', 'patch')
        and (resource like 'clusterrolebindings:%' or resource like 'rolebindings:%')
        and outcome = 'success'
),

final as (
    select
        event_id as resource,
        case when canonical like '%"name":"cluster-admin"%' then 'alarm' else 'ok' end as status,
        actor || ' bound ' || resource || case when canonical like '%"name":"cluster-admin"%'
            then ' to cluster-admin' else ' to a narrower role' end
            || ' at ' || to_char(at, '%Y-%m-%dT%H:%M:%SZ') as reason,
        at
    from grants
)

select * from final

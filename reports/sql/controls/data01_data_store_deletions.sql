/*
kind = "control"
id = "DATA-01"
title = "Data stores are not deleted outside change control"
description = """
Deletions of data stores (Kubernetes persistent volume claims and stateful sets, S3 buckets,
RDS instances, DynamoDB tables) by a person are alarms; attempts that were refused are info."""
severity = "critical"
soc2 = ["CC6.1", "A1.2", "CC8.1"]
iso27001 = ["A.8.10", "A.8.13"]
gdpr = ["Art. 32(1)(c)", "Art. 5(1)(f)"]
*/
with deletions as (
    select event_id, at, actor, action, resource, outcome
    from audit_events
    where (source = 'kubernetes' and action in ('delete', 'deletecollection')
            and (resource like 'persistentvolumeclaims:%' or resource like 'statefulsets:%'))
        or (source = 'cloudtrail' and action in ('s3.amazonaws.com:DeleteBucket',
            'rds.amazonaws.com:DeleteDBInstance', 'rds.amazonaws.com:DeleteDBCluster',
            'dynamodb.amazonaws.com:DeleteTable'))
),

final as (
    select
        event_id as resource,
        case
            when outcome <> 'success' then 'info'
            when actor like 'system:%' then 'info'
            else 'alarm'
        end as status,
        actor || ' ' || action || ' ' || resource || ' (' || outcome || ') at '
            || to_char(at, '%Y-%m-%dT%H:%M:%SZ') as reason,
        at
    from deletions
)

select * from final

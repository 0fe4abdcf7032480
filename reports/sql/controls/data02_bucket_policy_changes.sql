/*
kind = "control"
id = "DATA-02"
title = "Storage access policies change only through automation"
description = "A person changing an S3 bucket policy or ACL is an alarm: access policies belong in reviewed infrastructure code."
severity = "medium"
soc2 = ["CC6.1", "CC8.1"]
iso27001 = ["A.8.3", "A.8.9"]
gdpr = ["Art. 25", "Art. 32(1)(b)"]
*/
with final as (
    select
        event_id as resource,
        case when actor like '%:user/%' and outcome = 'success' then 'alarm' else 'info' end
            as status,
        actor || ' ' || action || ' on ' || resource || ' (' || outcome || ')' as reason,
        at
    from audit_events
    where source = 'cloudtrail'
        and action in ('s3.amazonaws.com:PutBucketPolicy', 's3.amazonaws.com:PutBucketAcl',
            's3.amazonaws.com:DeleteBucketPolicy')
)

select * from final

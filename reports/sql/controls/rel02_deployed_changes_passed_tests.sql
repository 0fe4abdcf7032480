/*
kind = "control"
id = "REL-02"
title = "Changes deployed to production passed their tests"
description = "Every change a production deployment carries has test results, and the last attempt of each of its tests passed or was skipped."
severity = "high"
soc2 = ["CC8.1"]
iso27001 = ["A.8.29", "A.8.32"]
gdpr = ["Art. 32(1)(d)"]
*/
with carried as (
    select deployment_id, started_at, unnest(change_ids) as change_id
    from deployments
    where environment in ('production', 'prod')
),

-- Each test's last attempt decides. Its failing flag rides in the lowest bit of a plain max
-- over the attempt numbers: an ordered last_value sorted every test result, which on ten
-- million of them took twenty seconds and five gigabytes.
last_attempts as (
    select
        change_id,
        test_id,
        max(coalesce(attempt, 0) * 2
            + case when status in ('failed', 'error') then 1 else 0 end) % 2 = 1 as is_failing
    from test_results
    where change_id is not null
    group by change_id, test_id
),

per_change as (
    select
        change_id,
        count(*) as tests,
        sum(case when is_failing then 1 else 0 end) as failing
    from last_attempts
    group by change_id
),

per_deployment as (
    select
        carried.deployment_id,
        min(carried.started_at) as started_at,
        count(*) as changes,
        sum(case when per_change.change_id is null then 1 else 0 end) as untested,
        sum(case when per_change.failing > 0 then 1 else 0 end) as failing
    from carried
    left join per_change on per_change.change_id = carried.change_id
    group by carried.deployment_id
),

final as (
    select
        deployment_id as resource,
        case when untested > 0 or failing > 0 then 'alarm' else 'ok' end as status,
        case
            when failing > 0 then cast(failing as varchar) || ' of ' || cast(changes as varchar)
                || ' changes had failing tests'
            when untested > 0 then cast(untested as varchar) || ' of ' || cast(changes as varchar)
                || ' changes have no test results'
            else 'all ' || cast(changes as varchar) || ' changes passed their tests'
        end as reason,
        started_at as at
    from per_deployment
)

select * from final

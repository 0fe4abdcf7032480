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

-- Changes with any test result.
tested as (
    select distinct change_id from test_results where change_id is not null
),

-- Each test's last attempt decides, and only a test with a failed attempt can fail: its last
-- failed attempt is compared with its last attempt of all. Grouping every test result by
-- change and test instead held 15.6M groups for the year's 15.8M results (6.3-6.7 s, 3 GB);
-- the failed ones are a fifteenth of them (4.4-4.5 s, 1.1 GB).
failed as (
    select change_id, test_id, max(coalesce(attempt, 0)) as attempt
    from test_results
    where change_id is not null and status in ('failed', 'error')
    group by change_id, test_id
),

failing as (
    select change_id, count(*) as failing
    from (
        select failed.change_id, failed.test_id, failed.attempt,
            max(coalesce(test_results.attempt, 0)) as last_attempt
        from failed
        join test_results on test_results.change_id = failed.change_id
            and test_results.test_id = failed.test_id
        group by failed.change_id, failed.test_id, failed.attempt
    )
    where attempt = last_attempt
    group by change_id
),

per_deployment as (
    select
        carried.deployment_id,
        min(carried.started_at) as started_at,
        count(*) as changes,
        sum(case when tested.change_id is null then 1 else 0 end) as untested,
        sum(case when failing.failing > 0 then 1 else 0 end) as failing
    from carried
    left join tested on tested.change_id = carried.change_id
    left join failing on failing.change_id = carried.change_id
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

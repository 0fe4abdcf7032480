/*
kind = "control"
id = "LOG-01"
title = "Audit logs are continuous"
description = "No audit source (kubernetes, cloudtrail) goes silent for longer than 24 hours between its first record and the report's as-of instant."
severity = "high"
soc2 = ["CC7.2", "CC4.1"]
iso27001 = ["A.8.15", "A.8.16"]
gdpr = ["Art. 30", "Art. 32(1)(d)"]
*/
with ordered as (
    select
        source,
        at,
        lead(at) over (partition by source order by at, seq) as next_at
    from audit_events
),

gaps as (
    select
        source,
        at as gap_from,
        coalesce(next_at, (select as_of from report_params)) as gap_to,
        (to_unixtime(coalesce(next_at, (select as_of from report_params))) - to_unixtime(at))
            / 3600.0 as hours
    from ordered
),

worst as (
    select
        source,
        count(*) as records,
        max(hours) as longest_hours,
        first_value(gap_from order by hours desc, gap_from) as longest_from
    from gaps
    group by source
),

final as (
    select
        source as resource,
        case when longest_hours > 24 then 'alarm' else 'ok' end as status,
        'longest silence ' || cast(round(longest_hours, 1) as varchar) || ' h from '
            || to_char(longest_from, '%Y-%m-%dT%H:%M:%SZ') || ' over '
            || cast(records as varchar) || ' records' as reason
    from worst
)

select * from final

/*
kind = "control"
id = "SLO-01"
title = "Services stay within their error budgets"
description = "Every SLO with traffic meets its objective over its current window (slo_status); one without traffic is skipped."
severity = "medium"
soc2 = ["A1.2", "CC7.2"]
iso27001 = ["A.8.14", "A.5.30"]
gdpr = ["Art. 32(1)(b)"]
after = ["slo_status"]
*/
with final as (
    select
        slo_id as resource,
        case status when 'no_data' then 'skip' when 'breached' then 'alarm' else 'ok' end
            as status,
        status || ': attainment ' || coalesce(cast(round(attainment, 5) as varchar), 'n/a')
            || ' against ' || cast(objective as varchar) || ' over ' || window as reason
    from slo_status
)

select * from final

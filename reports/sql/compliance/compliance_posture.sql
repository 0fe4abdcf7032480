/*
kind = "report"
title = "Compliance posture per framework"
description = """
For each framework (SOC 2, ISO 27001, GDPR) and each of its clauses that a control maps to: how
many resources the controls checked and how many are in alarm, waived, ok, info, skipped or in
error; a clause passes when nothing is in alarm or error. The row with clause 'all' sums the
framework. posture is the share of checked resources (ok, alarm, waived) not in alarm."""
after = ["compliance_results"]

[[columns]]
name = "framework"
doc = "soc2, iso27001 or gdpr."
[[columns]]
name = "clause"
doc = "The clause, or all for the whole framework."
[[columns]]
name = "controls"
doc = "Controls mapped to the clause."
[[columns]]
name = "ok"
doc = "Resources that pass."
[[columns]]
name = "alarm"
doc = "Resources in alarm, waivers not counted."
[[columns]]
name = "waived"
doc = "Alarms covered by an unexpired waiver."
[[columns]]
name = "info"
doc = "Resources noted, neither pass nor fail."
[[columns]]
name = "skip"
doc = "Resources a control could not apply to."
[[columns]]
name = "error"
doc = "Controls whose query failed."
[[columns]]
name = "posture"
doc = "(ok + waived) / (ok + alarm + waived); null when nothing was checked."
[[columns]]
name = "passes"
doc = "No alarm and no error."
*/
with mapped as (
    select 'soc2' as framework, unnest(string_to_array(soc2, ', ')) as clause, control_id,
        resource, status
    from compliance_results where soc2 <> ''
    union all
    select 'iso27001', unnest(string_to_array(iso27001, ', ')), control_id, resource, status
    from compliance_results where iso27001 <> ''
    union all
    select 'gdpr', unnest(string_to_array(gdpr, ', ')), control_id, resource, status
    from compliance_results where gdpr <> ''
),

both_levels as (
    select framework, clause, control_id, status from mapped
    union all
    -- A resource counts once per control in the framework total, however many clauses it maps to.
    select framework, 'all', control_id, status
    from (select distinct framework, control_id, resource, status from mapped)
),

counted as (
    select
        framework,
        clause,
        count(distinct control_id) as controls,
        sum(case when status = 'ok' then 1 else 0 end) as ok,
        sum(case when status = 'alarm' then 1 else 0 end) as alarm,
        sum(case when status = 'waived' then 1 else 0 end) as waived,
        sum(case when status = 'info' then 1 else 0 end) as info,
        sum(case when status = 'skip' then 1 else 0 end) as skip,
        sum(case when status = 'error' then 1 else 0 end) as error
    from both_levels
    group by framework, clause
),

final as (
    select
        framework, clause, controls, ok, alarm, waived, info, skip, error,
        case when ok + alarm + waived > 0
            then cast(ok + waived as double) / (ok + alarm + waived) end as posture,
        alarm = 0 and error = 0 as passes
    from counted
)

select * from final order by framework, clause = 'all' desc, clause

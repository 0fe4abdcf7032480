/*
kind = "control"
id = "LOG-02"
title = "The audit hash chain is linked"
description = """
Audit records form one chain in ingest order: sequence numbers run without gaps and each
record's prev_hash is the hash of the record before. A break means a record was deleted,
inserted or reordered; `maestro audit verify` recomputes every hash and names the first broken
record."""
severity = "critical"
soc2 = ["CC7.2", "CC4.1"]
iso27001 = ["A.8.15", "A.5.28"]
gdpr = ["Art. 5(1)(f)", "Art. 32(1)(b)"]
*/
with linked as (
    select
        seq,
        prev_hash,
        lag(seq) over (order by seq) as previous_seq,
        lag(hash) over (order by seq) as previous_hash
    from audit_events
),

breaks as (
    select
        count(*) as records,
        sum(case when previous_seq is not null
            and (seq <> previous_seq + 1 or prev_hash <> previous_hash) then 1 else 0 end)
            as broken,
        min(case when previous_seq is not null
            and (seq <> previous_seq + 1 or prev_hash <> previous_hash) then seq end)
            as first_broken
    from linked
),

final as (
    select
        'audit_events' as resource,
        case when records = 0 then 'skip' when broken > 0 then 'alarm' else 'ok' end as status,
        case
            when records = 0 then 'no audit records'
            when broken > 0 then cast(broken as varchar) || ' broken links, the first at seq '
                || cast(first_broken as varchar)
            else cast(records as varchar) || ' records linked'
        end as reason
    from breaks
)

select * from final

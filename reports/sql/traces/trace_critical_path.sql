/*
kind = "report"
title = "Critical path per trace"
description = """
Per trace of `critical_spans` (started in the report period or the one before it): its root,
its duration, the services and operations on its critical path (root first) and the self time
they account for, so that a slow request shows where it waited."""
after = ["critical_spans"]

[[columns]]
name = "trace_id"
doc = "The trace."
[[columns]]
name = "root_service"
doc = "The service of its root span."
[[columns]]
name = "root_operation"
doc = "The operation of its root span."
[[columns]]
name = "duration_ms"
doc = "The root span's duration."
[[columns]]
name = "critical_path"
doc = "service:operation of each span on the critical path, root first, joined by ' > '."
[[columns]]
name = "critical_self_ms"
doc = "Self time summed along the critical path."
[[columns]]
name = "slowest_service"
doc = "The service with the most self time on the critical path."
*/
with ordered as (
    select
        trace_id,
        depth,
        service,
        operation,
        duration_ms,
        self_ms,
        row_number() over (partition by trace_id order by self_ms desc, depth) as by_self
    from critical_spans
),

final as (
    select
        trace_id,
        max(case when depth = 0 then service end) as root_service,
        max(case when depth = 0 then operation end) as root_operation,
        max(case when depth = 0 then duration_ms end) as duration_ms,
        string_agg(service || ':' || operation, ' > ' order by depth) as critical_path,
        -- Rounded: float sums may be added in any order across partitions.
        round(sum(self_ms), 6) as critical_self_ms,
        max(case when by_self = 1 then service end) as slowest_service
    from ordered
    group by trace_id
)

select * from final order by trace_id

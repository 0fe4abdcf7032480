/*
kind = "view"
title = "Spans on each trace's critical path"
description = """
The critical path of a trace, walked from its root: at each span, the child that finished last
(`trace_last_children`) is the one its parent waited for. Each span's self time is its duration minus the time of its
children (children that overlap each other are counted in full, so self time is a lower bound
for parents that call in parallel; it is never below zero). Traces that started in the report
period or the one before it: a year of traces is tens of millions of spans, and the trace
reports describe recent behaviour."""
after = ["trace_last_children"]

[[columns]]
name = "trace_id"
doc = "The trace."
[[columns]]
name = "span_id"
doc = "A span on its critical path."
[[columns]]
name = "service"
doc = "The span's service."
[[columns]]
name = "operation"
doc = "The span's operation."
[[columns]]
name = "depth"
doc = "0 for the root, then one per call."
[[columns]]
name = "duration_ms"
doc = "The span's duration."
[[columns]]
name = "self_ms"
doc = "Its duration minus its children's."
*/
with recursive period_spans as (
    select spans.trace_id, spans.span_id, spans.parent_span_id, spans.service, spans.operation,
        spans.duration_ms, spans.end_at
    from spans
    cross join report_params
    where spans.start_at >= report_params.previous_start and spans.start_at < report_params.as_of
),

walk as (
    select trace_id, span_id, service, operation, duration_ms, 0 as depth
    from period_spans
    where parent_span_id is null
    union all
    select c.trace_id, c.span_id, c.service, c.operation, c.duration_ms, walk.depth + 1
    from walk
    join trace_last_children c on c.trace_id = walk.trace_id and c.parent_span_id = walk.span_id
),

child_time as (
    select trace_id, parent_span_id as span_id, sum(duration_ms) as children_ms
    from period_spans
    where parent_span_id is not null
    group by trace_id, parent_span_id
),

final as (
    select
        walk.trace_id,
        walk.span_id,
        walk.service,
        walk.operation,
        walk.depth,
        walk.duration_ms,
        greatest(walk.duration_ms - coalesce(child_time.children_ms, 0), 0) as self_ms
    from walk
    left join child_time on child_time.trace_id = walk.trace_id and child_time.span_id = walk.span_id
)

select * from final

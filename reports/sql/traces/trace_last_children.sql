/*
kind = "view"
title = "The child each span waited for"
description = """
For every span with children, among the spans of `critical_spans` (traces that started in the
report period or the one before it), the child that finished last: the one its parent waited
for. Ties go to the lowest span id. A view of its own because `critical_spans` walks down it
once per level of the call tree, and a query inside that walk is run again at every level."""

[[columns]]
name = "trace_id"
doc = "The trace."
[[columns]]
name = "parent_span_id"
doc = "The parent span."
[[columns]]
name = "span_id"
doc = "Its child that finished last."
[[columns]]
name = "service"
doc = "The child's service."
[[columns]]
name = "operation"
doc = "The child's operation."
[[columns]]
name = "duration_ms"
doc = "The child's duration."
*/
with children as (
    select
        spans.trace_id, spans.parent_span_id, spans.span_id, spans.service, spans.operation,
        spans.duration_ms,
        row_number() over (
            partition by spans.trace_id, spans.parent_span_id
            order by spans.end_at desc, spans.span_id
        ) as nth
    from spans
    cross join report_params
    where spans.start_at >= report_params.previous_start
        and spans.start_at < report_params.as_of
        and spans.parent_span_id is not null
),

final as (
    select trace_id, parent_span_id, span_id, service, operation, duration_ms
    from children
    where nth = 1
)

select * from final

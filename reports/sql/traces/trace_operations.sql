/*
kind = "report"
title = "Latency, errors and bottlenecks per service and operation"
description = """
Per service and operation, over the spans that started in the report period or the one before
it (as `critical_spans`): count, error rate (status error), the 50th, 95th and
99th percentile of duration (exact, interpolated), and its self time on critical paths: the
total, the share of all critical-path self time, and its rank as a bottleneck (1 is the
operation requests waited on most)."""
after = ["critical_spans"]

[[columns]]
name = "service"
doc = "The service."
[[columns]]
name = "operation"
doc = "The operation (span name)."
[[columns]]
name = "spans"
doc = "Spans of the operation."
[[columns]]
name = "error_rate"
doc = "Share of its spans with status error."
[[columns]]
name = "p50_ms"
doc = "Median duration."
[[columns]]
name = "p95_ms"
doc = "95th percentile of duration."
[[columns]]
name = "p99_ms"
doc = "99th percentile of duration."
[[columns]]
name = "critical_self_ms"
doc = "Self time on critical paths, summed over traces."
[[columns]]
name = "critical_self_share"
doc = "Share of all critical-path self time."
[[columns]]
name = "bottleneck_rank"
doc = "1 for the operation with the most critical-path self time."
*/
with latency as (
    select
        service,
        operation,
        count(*) as spans,
        avg(case when status = 'error' then 1.0 else 0.0 end) as error_rate,
        percentile_cont(0.5) within group (order by duration_ms) as p50_ms,
        percentile_cont(0.95) within group (order by duration_ms) as p95_ms,
        percentile_cont(0.99) within group (order by duration_ms) as p99_ms
    from spans
    cross join report_params
    where spans.start_at >= report_params.previous_start and spans.start_at < report_params.as_of
    group by service, operation
),

critical as (
    -- Rounded: float sums may be added in any order across partitions.
    select service, operation, round(sum(self_ms), 6) as critical_self_ms
    from critical_spans
    group by service, operation
),

final as (
    select
        latency.service,
        latency.operation,
        latency.spans,
        latency.error_rate,
        latency.p50_ms,
        latency.p95_ms,
        latency.p99_ms,
        coalesce(critical.critical_self_ms, 0) as critical_self_ms,
        coalesce(critical.critical_self_ms, 0)
            / nullif(sum(coalesce(critical.critical_self_ms, 0)) over (), 0) as critical_self_share,
        rank() over (order by coalesce(critical.critical_self_ms, 0) desc) as bottleneck_rank
    from latency
    left join critical on critical.service = latency.service and critical.operation = latency.operation
)

select * from final order by bottleneck_rank, service, operation

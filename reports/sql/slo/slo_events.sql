/*
kind = "view"
title = "SLO events per five minutes"
description = """
Good and total events of every SLO in five-minute bins, the input of the SLO reports. Ratio
SLIs count metric increments: delta sums as they are, cumulative counters (Prometheus
counters, OTLP cumulative sums) as the difference from the previous point of the same series,
a drop being a counter reset. Gauges are levels, not counts of events: they are left out.
Threshold SLIs over a histogram count the observations in buckets whose upper bound is within
the threshold (set thresholds on bucket bounds: a bucket that straddles the threshold counts
as bad); threshold SLIs over spans count the service's server spans (of the named operation,
if any) by duration. Canary analysis series (attribute deployment.track) are left out: they
repeat a share of the same traffic. A point counts in the bin where its interval ends."""

[[columns]]
name = "slo_id"
doc = "The SLO."
[[columns]]
name = "at"
doc = "End of the five-minute bin (UTC)."
[[columns]]
name = "good"
doc = "Good events in the bin."
[[columns]]
name = "total"
doc = "All events in the bin."
*/
-- What each series an SLO reads stands for: a ratio SLI's good, bad or total events, or a
-- threshold SLI's histogram, whose good events are the observations within the threshold or
-- beyond it.
with wanted as (
    select slo_id, service, 'good' as role, good_metric as metric, threshold from slos
    where indicator_source = 'metric_points' and indicator_kind = 'ratio'
        and good_metric is not null
    union all
    select slo_id, service, 'bad', bad_metric, threshold from slos
    where indicator_source = 'metric_points' and indicator_kind = 'ratio'
        and bad_metric is not null
    union all
    select slo_id, service, 'total', total_metric, threshold from slos
    where indicator_source = 'metric_points' and indicator_kind = 'ratio'
        and total_metric is not null
    union all
    select slo_id, service,
        case when threshold_op in ('gt', 'gte') then 'beyond' else 'within' end,
        threshold_metric, threshold
    from slos
    where indicator_source = 'metric_points' and indicator_kind = 'threshold'
),

-- One reading per point: a counter's value, or a histogram's observations within the threshold
-- and all of them. Instants are carried as microseconds since the epoch for the binning below.
-- The histogram function runs on every point (an empty histogram costs nothing): choosing
-- the points first would copy their bucket lists.
readings as (
    select
        wanted.slo_id,
        wanted.role,
        metric_points.metric,
        metric_points.attributes,
        metric_points.kind,
        arrow_cast(metric_points.at, 'Int64') as us,
        coalesce(metric_points.temporality, 'cumulative') = 'delta' as is_delta,
        metric_points.value,
        histogram_count_within(
            metric_points.bucket_bounds, metric_points.bucket_counts, wanted.threshold) as within,
        metric_points.count
    from metric_points
    join wanted on wanted.service = metric_points.service and wanted.metric = metric_points.metric
    where metric_points.attributes not like '%"deployment.track"%'
        and metric_points.at < (select as_of from report_params)
        and (wanted.role not in ('within', 'beyond') or cardinality(metric_points.bucket_bounds) > 0)
),

-- What happened during each point's interval: delta points as they are, cumulative ones as the
-- difference from the series' previous point (none for its first).
increments as (
    select slo_id, role, us, value, within, count
    from readings
    where is_delta
    union all
    select slo_id, role, us,
        case when previous_value is null then null
            when value >= previous_value then value - previous_value
            else value end,
        case when previous_within is null then null
            when within >= previous_within then within - previous_within
            else within end,
        case when previous_count is null then null
            when count >= previous_count then count - previous_count
            else count end
    from (
        select readings.*,
            lag(value) over series as previous_value,
            lag(within) over series as previous_within,
            lag(count) over series as previous_count
        from readings
        where not is_delta and kind <> 'gauge'
        window series as (partition by slo_id, role, metric, attributes order by us)
    )
),

-- A point counts in the five-minute bin its instant ends: bins are numbered from the epoch, a
-- point on a boundary closing the bin before it. Integer division rounds toward zero, hence
-- the second branch for instants before 1970. Integers rather than date_bin: over every point
-- date_bin cost as much as the rest of the grouping.
binned as (
    select
        slo_id,
        case when us > 0 then (us - 1) / 300000000 + 1
            else 1 - (300000000 - us) / 300000000 end as bin,
        sum(case role when 'good' then value when 'within' then within
            when 'beyond' then count - within end) as good,
        sum(case when role = 'bad' then value end) as bad,
        sum(case role when 'total' then value when 'within' then count
            when 'beyond' then count end) as total
    from increments
    group by 1, 2
),

metric_events as (
    select
        slo_id,
        arrow_cast(bin * 300000000, 'Timestamp(Microsecond, Some("UTC"))') as at,
        coalesce(good, total - coalesce(bad, 0)) as good,
        total
    from binned
    where total is not null
),

span_events as (
    select
        slos.slo_id,
        date_bin(interval '5 minutes', spans.end_at - interval '1 microsecond')
            + interval '5 minutes' as at,
        cast(sum(case
            when slos.threshold_op in ('gt', 'gte') and spans.duration_ms > slos.threshold then 1
            when slos.threshold_op not in ('gt', 'gte') and spans.duration_ms <= slos.threshold then 1
            else 0 end) as double) as good,
        cast(count(*) as double) as total
    from spans
    join slos on slos.service = spans.service
    where slos.indicator_source = 'spans'
        and spans.kind = 'server'
        and (slos.threshold_metric is null or spans.operation = slos.threshold_metric)
        and spans.end_at < (select as_of from report_params)
    group by 1, 2
),

final as (
    select slo_id, at, greatest(least(good, total), 0) as good, total from metric_events
    union all
    select slo_id, at, good, total from span_events
)

select * from final

/*
kind = "view"
title = "SLO events per five minutes"
description = """
Good and total events of every SLO in five-minute bins, the input of the SLO reports. Ratio
SLIs count metric increments: delta sums as they are, cumulative counters (Prometheus
counters, OTLP cumulative sums) as the difference from the previous point of the same series,
a drop being a counter reset. Threshold SLIs over a histogram count the observations in buckets
whose upper bound is within the threshold (set thresholds on bucket bounds: a bucket that
straddles the threshold counts as bad); threshold SLIs over spans count the service's server
spans (of the named operation, if any) by duration. Canary analysis series (attribute
deployment.track) are left out: they repeat a share of the same traffic. A point counts in the
bin where its interval ends."""

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
with wanted as (
    select slo_id, service, 'good' as role, good_metric as metric, threshold from slos
    where indicator_source = 'metric_points' and good_metric is not null
    union all
    select slo_id, service, 'bad', bad_metric, threshold from slos
    where indicator_source = 'metric_points' and bad_metric is not null
    union all
    select slo_id, service, 'total', total_metric, threshold from slos
    where indicator_source = 'metric_points' and total_metric is not null
    union all
    select slo_id, service, 'histogram', threshold_metric, threshold from slos
    where indicator_source = 'metric_points' and indicator_kind = 'threshold'
),

-- One reading per point: a counter's or gauge's value; for a histogram, the observations within
-- the threshold (value) and all of them (count).
readings as (
    select
        wanted.slo_id,
        wanted.role,
        metric_points.metric,
        metric_points.attributes,
        metric_points.at,
        coalesce(metric_points.temporality, 'cumulative') = 'delta' as is_delta,
        case when wanted.role = 'histogram'
            then histogram_count_within(
                metric_points.bucket_bounds, metric_points.bucket_counts, wanted.threshold)
            else metric_points.value
        end as value,
        case when wanted.role = 'histogram' then metric_points.count end as count
    from metric_points
    join wanted on wanted.service = metric_points.service and wanted.metric = metric_points.metric
    where metric_points.attributes not like '%"deployment.track"%'
        and metric_points.at < (select as_of from report_params)
        and (wanted.role <> 'histogram' or cardinality(metric_points.bucket_bounds) > 0)
),

-- What happened during each point's interval: delta points as they are, cumulative ones as the
-- difference from the series' previous point (none for its first).
increments as (
    select slo_id, role, at, value, count
    from readings
    where is_delta
    union all
    select slo_id, role, at,
        case when previous_value is null then null
            when value >= previous_value then value - previous_value
            else value end,
        case when previous_count is null then null
            when count >= previous_count then count - previous_count
            else count end
    from (
        select readings.*,
            lag(value) over (partition by slo_id, role, metric, attributes order by at)
                as previous_value,
            lag(count) over (partition by slo_id, role, metric, attributes order by at)
                as previous_count
        from readings
        where not is_delta
    )
),

binned as (
    select
        slo_id,
        date_bin(interval '5 minutes', at - interval '1 microsecond') + interval '5 minutes' as at,
        sum(case when role = 'good' then value end) as good,
        sum(case when role = 'bad' then value end) as bad,
        sum(case when role = 'histogram' then value end) as within,
        sum(case when role = 'histogram' then count when role = 'total' then value end) as total
    from increments
    group by 1, 2
),

metric_events as (
    select
        binned.slo_id,
        binned.at,
        case
            when slos.indicator_kind = 'threshold' and slos.threshold_op in ('gt', 'gte')
                then binned.total - coalesce(binned.within, 0)
            when slos.indicator_kind = 'threshold' then coalesce(binned.within, 0)
            when binned.good is not null then binned.good
            else binned.total - coalesce(binned.bad, 0)
        end as good,
        binned.total
    from binned
    join slos on slos.slo_id = binned.slo_id
    where binned.total is not null
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

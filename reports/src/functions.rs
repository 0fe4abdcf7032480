//! SQL functions Maestro adds to every lake session, for reports and for users' own queries.
//!
//! `histogram_count_within(bucket_bounds, bucket_counts, threshold)`: the observations of an
//! explicit-bucket histogram point whose bucket lies within `threshold`, that is the sum of the
//! counts of the buckets whose upper bound is at most `threshold` (a bucket that straddles the
//! threshold counts as beyond it). Null when either list is null; 0 when the threshold is null
//! or below the first bound. Threshold SLIs over histograms are built on it.
//!
//! Why a function of our own: DataFusion's higher-order array functions (`array_filter` with a
//! lambda) would express this, but its default SQL dialect does not parse lambdas, and
//! exploding every point into one row per bucket to sum them multiplied the rows of the SLO
//! query by the number of buckets.
//!
//! `trailing_sum(value, t, seconds) OVER (PARTITION BY ... ORDER BY t)`: the sum of `value` over
//! the rows whose `t` lies in `(t - seconds, t]`, the same as `sum(value) OVER (... ORDER BY t
//! RANGE BETWEEN seconds - 1 PRECEDING AND CURRENT ROW)` on integer `t`; null when every value
//! in the window is null. `seconds` is a constant and the rows must be ordered by `t`
//! ascending. Burn-rate alerts are built on it.
//!
//! `trailing_ratio(numerator, denominator, t, seconds) OVER (PARTITION BY ... ORDER BY t)`: the
//! trailing sum of `numerator` over that of `denominator`, over the same window (a rate of
//! events); null when either sum is null or the denominator's is not positive. One column where the two sums would take two: the
//! burn-rate alerts hold every five-minute bin of the history at once.
//!
//! Why functions of our own: DataFusion 55 finds the bounds of a RANGE frame row by row
//! through `ScalarValue`s (a value built, shifted and compared per step of the search), which
//! cost about a microsecond per row and frame: the twelve frames of the burn-rate alerts took
//! 13 µs a row. This one walks each partition once with two indices over the raw arrays.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Float64Builder, Int64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Int64Type};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{
    ColumnarValue, PartitionEvaluator, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility, WindowUDF, WindowUDFImpl,
};
use datafusion::physical_expr::expressions::Literal;

/// Every scalar function of this module, to register in a session.
pub fn all() -> Vec<ScalarUDF> {
    vec![ScalarUDF::from(HistogramCountWithin::new())]
}

/// Every window function of this module, to register in a session.
pub fn all_window() -> Vec<WindowUDF> {
    vec![
        WindowUDF::from(Trailing::sum()),
        WindowUDF::from(Trailing::ratio()),
    ]
}

/// `histogram_count_within(bucket_bounds, bucket_counts, threshold)`; see the module docs.
#[derive(Debug, PartialEq, Eq, Hash)]
struct HistogramCountWithin {
    signature: Signature,
}

impl HistogramCountWithin {
    fn new() -> Self {
        HistogramCountWithin {
            signature: Signature::any(3, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for HistogramCountWithin {
    fn name(&self) -> &str {
        "histogram_count_within"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let is_float_list =
            |t: &DataType| matches!(t, DataType::List(f) if f.data_type() == &DataType::Float64);
        match arg_types {
            [bounds, counts, threshold]
                if is_float_list(bounds)
                    && is_float_list(counts)
                    && (threshold.is_numeric() || threshold.is_null()) =>
            {
                Ok(DataType::Float64)
            }
            _ => plan_err!(
                "histogram_count_within(bucket_bounds, bucket_counts, threshold) takes two lists of doubles and a number, not {arg_types:?}"
            ),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [bounds, counts, threshold] = arrays.as_slice() else {
            return exec_err!("histogram_count_within takes three arguments");
        };
        let threshold = datafusion::arrow::compute::cast(threshold, &DataType::Float64)?;
        Ok(ColumnarValue::Array(count_within(
            bounds,
            counts,
            threshold.as_primitive::<Float64Type>(),
        )?))
    }
}

/// `trailing_sum(value, t, seconds)` and `trailing_ratio(numerator, denominator, t, seconds)`;
/// see the module docs.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Trailing {
    signature: Signature,
    ratio: bool,
}

impl Trailing {
    fn sum() -> Self {
        Trailing {
            signature: Signature::any(3, Volatility::Immutable),
            ratio: false,
        }
    }

    fn ratio() -> Self {
        Trailing {
            signature: Signature::any(4, Volatility::Immutable),
            ratio: true,
        }
    }

    fn usage(&self) -> &'static str {
        if self.ratio {
            "trailing_ratio(numerator, denominator, t, seconds) takes two numbers and two integers"
        } else {
            "trailing_sum(value, t, seconds) takes a number and two integers"
        }
    }
}

impl WindowUDFImpl for Trailing {
    fn name(&self) -> &str {
        if self.ratio {
            "trailing_ratio"
        } else {
            "trailing_sum"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn field(&self, field_args: WindowUDFFieldArgs) -> Result<FieldRef> {
        let types: Vec<&DataType> = field_args
            .input_fields()
            .iter()
            .map(|f| f.data_type())
            .collect();
        let (values, times) = types.split_at(types.len().saturating_sub(2));
        let fits = values.iter().all(|v| v.is_numeric())
            && times.len() == 2
            && times.iter().all(|t| t.is_integer());
        if fits {
            Ok(Arc::new(Field::new(
                field_args.name(),
                DataType::Float64,
                true,
            )))
        } else {
            plan_err!("{}, not {types:?}", self.usage())
        }
    }

    fn partition_evaluator(
        &self,
        args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        let seconds = args
            .input_exprs()
            .last()
            .and_then(|e| e.downcast_ref::<Literal>())
            .and_then(|l| l.value().cast_to(&DataType::Int64).ok());
        match seconds {
            Some(ScalarValue::Int64(Some(seconds))) if seconds > 0 => {
                Ok(Box::new(TrailingEvaluator {
                    seconds,
                    ratio: self.ratio,
                }))
            }
            _ => plan_err!(
                "{}'s window must be a constant positive number of seconds",
                self.name()
            ),
        }
    }
}

#[derive(Debug)]
struct TrailingEvaluator {
    seconds: i64,
    ratio: bool,
}

impl PartitionEvaluator for TrailingEvaluator {
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> Result<ArrayRef> {
        let float = |i: usize| datafusion::arrow::compute::cast(&values[i], &DataType::Float64);
        let t_index = if self.ratio { 2 } else { 1 };
        let t = datafusion::arrow::compute::cast(&values[t_index], &DataType::Int64)?;
        let t = t.as_primitive::<Int64Type>();
        let first = trailing_sums(float(0)?.as_primitive(), t, self.seconds, num_rows)?;
        if !self.ratio {
            return Ok(Arc::new(first));
        }
        let second = trailing_sums(float(1)?.as_primitive(), t, self.seconds, num_rows)?;
        // One output column where two sums would be two: the burn-rate alerts hold every bin.
        let ratios: Float64Array = first
            .iter()
            .zip(second.iter())
            .map(|(n, d)| match (n, d) {
                (Some(n), Some(d)) if d > 0.0 => Some(n / d),
                _ => None,
            })
            .collect();
        Ok(Arc::new(ratios))
    }
}

/// Sums over `(t - seconds, t]` of a partition ordered by `t`: a running sum (and, where some
/// values are null, a running count of the others), from which each window is the difference
/// between its end (the last row with the same `t`) and its start (the first row after
/// `t - seconds`). A window of no non-null value is null; without nulls every window holds its
/// own row, so none is. Sums of whole numbers, as event counts are, are exact.
fn trailing_sums(
    value: &Float64Array,
    t: &Int64Array,
    seconds: i64,
    num_rows: usize,
) -> Result<Float64Array> {
    use datafusion::arrow::array::BooleanBufferBuilder;
    use datafusion::arrow::buffer::NullBuffer;
    if t.null_count() > 0 {
        return exec_err!("trailing_sum: t must not be null");
    }
    let t = t.values();
    if t.windows(2).any(|w| w[0] > w[1]) {
        return exec_err!("trailing_sum must be ordered by its t, ascending (ORDER BY t)");
    }
    let values = value.values();
    let mut running = Vec::with_capacity(num_rows + 1);
    let mut sum = 0.0;
    running.push(sum);
    // The burn-rate alerts run this twelve times over every bin of the history, whose values
    // are never null: a count and a validity per row there were most of its time.
    let counted: Option<Vec<usize>> = match value.nulls() {
        None => {
            for &v in &values[..num_rows] {
                sum += v;
                running.push(sum);
            }
            None
        }
        Some(nulls) => {
            let mut counted = Vec::with_capacity(num_rows + 1);
            let mut count = 0;
            counted.push(count);
            for (i, &v) in values[..num_rows].iter().enumerate() {
                if nulls.is_valid(i) {
                    sum += v;
                    count += 1;
                }
                running.push(sum);
                counted.push(count);
            }
            Some(counted)
        }
    };
    let mut sums = Vec::with_capacity(num_rows);
    let mut validity = counted
        .as_ref()
        .map(|_| BooleanBufferBuilder::new(num_rows));
    let (mut start, mut end) = (0, 0);
    for i in 0..num_rows {
        while end < num_rows && t[end] <= t[i] {
            end += 1;
        }
        while t[start] <= t[i].saturating_sub(seconds) {
            start += 1;
        }
        sums.push(running[end] - running[start]);
        if let (Some(counted), Some(validity)) = (&counted, &mut validity) {
            validity.append(counted[end] > counted[start]);
        }
    }
    Ok(Float64Array::new(
        sums.into(),
        validity.map(|mut v| NullBuffer::new(v.finish())),
    ))
}

fn count_within(
    bounds: &ArrayRef,
    counts: &ArrayRef,
    threshold: &Float64Array,
) -> Result<ArrayRef> {
    let (Some(bounds), Some(counts)) = (bounds.as_list_opt::<i32>(), counts.as_list_opt::<i32>())
    else {
        return exec_err!("histogram_count_within: bucket_bounds and bucket_counts must be lists");
    };
    let bound_values = bounds.values().as_primitive::<Float64Type>();
    let count_values = counts.values().as_primitive::<Float64Type>();
    let mut out = Float64Builder::with_capacity(bounds.len());
    for row in 0..bounds.len() {
        if bounds.is_null(row) || counts.is_null(row) {
            out.append_null();
            continue;
        }
        let (bound_start, bound_end) = (
            bounds.value_offsets()[row] as usize,
            bounds.value_offsets()[row + 1] as usize,
        );
        let count_start = counts.value_offsets()[row] as usize;
        let count_end = counts.value_offsets()[row + 1] as usize;
        let mut within = 0.0;
        if threshold.is_valid(row) {
            let limit = threshold.value(row);
            for (i, b) in (bound_start..bound_end).enumerate() {
                let c = count_start + i;
                if c >= count_end {
                    break;
                }
                if bound_values.is_valid(b)
                    && bound_values.value(b) <= limit
                    && count_values.is_valid(c)
                {
                    within += count_values.value(c);
                }
            }
        }
        out.append_value(within);
    }
    Ok(Arc::new(out.finish()))
}

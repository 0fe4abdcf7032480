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

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, Float64Builder};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// Every function of this module, to register in a session.
pub fn all() -> Vec<ScalarUDF> {
    vec![ScalarUDF::from(HistogramCountWithin::new())]
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::ListArray;

    fn lists(rows: Vec<Option<Vec<Option<f64>>>>) -> ArrayRef {
        Arc::new(ListArray::from_iter_primitive::<Float64Type, _, _>(rows))
    }

    #[test]
    fn counts_buckets_whose_upper_bound_is_within_the_threshold() {
        let bounds = lists(vec![
            Some(vec![Some(100.0), Some(250.0), Some(500.0)]),
            Some(vec![Some(100.0), Some(250.0), Some(500.0)]),
            Some(vec![Some(100.0), Some(250.0), Some(500.0)]),
            None,
        ]);
        let counts = lists(vec![
            Some(vec![Some(6.0), Some(3.0), Some(1.0), Some(2.0)]),
            Some(vec![Some(6.0), Some(3.0), Some(1.0), Some(2.0)]),
            Some(vec![Some(6.0), Some(3.0), Some(1.0), Some(2.0)]),
            Some(vec![Some(1.0)]),
        ]);
        // On a bound, between bounds (the straddling bucket is beyond), no threshold, no list.
        let threshold = Float64Array::from(vec![Some(250.0), Some(300.0), None, Some(1.0)]);
        let within = count_within(&bounds, &counts, &threshold).unwrap();
        let within = within.as_primitive::<Float64Type>();
        assert_eq!(within.value(0), 9.0);
        assert_eq!(within.value(1), 9.0);
        assert_eq!(within.value(2), 0.0);
        assert!(within.is_null(3));
    }
}

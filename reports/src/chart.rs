//! Charts as self-contained SVG, drawn with plotters, for reports and evaluation figures:
//! [`ShareChart`] (shares against shares), [`TimeChart`] (series over dates) and [`BarChart`]
//! (labelled bars against a target).

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::{Error, Result};

/// One line of a chart: a name for the legend and its points, in drawing order.
#[derive(Debug, Clone)]
pub struct Series {
    /// The legend's name of the line.
    pub name: String,
    /// (x, y) points; points with a non-finite coordinate are left out.
    pub points: Vec<(f64, f64)>,
}

/// A line chart whose axes are shares from 0 to 1, printed as percentages.
#[derive(Debug, Clone)]
pub struct ShareChart {
    /// The caption above the plot.
    pub title: String,
    /// What the x axis measures.
    pub x_label: String,
    /// What the y axis measures.
    pub y_label: String,
    /// The lines, each in its own colour, each point marked.
    pub series: Vec<Series>,
}

const WIDTH: u32 = 760;
const HEIGHT: u32 = 500;

impl ShareChart {
    /// The chart as an SVG document. The same chart gives the same bytes.
    pub fn to_svg(&self) -> Result<String> {
        let mut svg = String::new();
        self.draw(SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)))
            .map_err(|e| Error::Render(format!("drawing the chart {:?}: {e}", self.title)))?;
        Ok(svg)
    }

    fn draw(&self, backend: SVGBackend<'_>) -> Result<(), Box<dyn std::error::Error + '_>> {
        let root = backend.into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..1f64, 0f64..1.02f64)?;
        let percent = |v: &f64| format!("{:.0}%", 100.0 * v);
        chart
            .configure_mesh()
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .x_label_formatter(&percent)
            .y_label_formatter(&percent)
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        draw_lines(
            &mut chart,
            &self.series,
            3,
            Some(SeriesLabelPosition::LowerRight),
        )?;
        root.present()?;
        Ok(())
    }
}

/// A line chart over time: x is days since `origin_day` labelled as dates, y in the series' unit.
#[derive(Debug, Clone)]
pub struct TimeChart {
    /// The caption above the plot.
    pub title: String,
    /// What the y axis measures, with its unit.
    pub y_label: String,
    /// Whether y is a share, printed as a percentage.
    pub y_is_share: bool,
    /// The lines; x is in days since the Unix epoch.
    pub series: Vec<Series>,
}

impl TimeChart {
    /// The chart as an SVG document. The same chart gives the same bytes.
    pub fn to_svg(&self) -> Result<String> {
        let mut svg = String::new();
        self.draw(SVGBackend::with_string(&mut svg, (WIDTH, 360)))
            .map_err(|e| Error::Render(format!("drawing the chart {:?}: {e}", self.title)))?;
        Ok(svg)
    }

    fn draw(&self, backend: SVGBackend<'_>) -> Result<(), Box<dyn std::error::Error + '_>> {
        let points: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        let (x_min, x_max) = points
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (x, _)| {
                (lo.min(*x), hi.max(*x))
            });
        let (x_min, x_max) = if x_min.is_finite() && x_max > x_min {
            (x_min, x_max)
        } else if x_min.is_finite() {
            (x_min - 1.0, x_min + 1.0)
        } else {
            (0.0, 1.0)
        };
        let y_max = points.iter().map(|(_, y)| *y).fold(0.0f64, f64::max);
        let y_max = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };
        let root = backend.into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, ("sans-serif", 18))
            .margin(14)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(x_min..x_max, 0f64..y_max)?;
        let date = |x: &f64| {
            maestro_datasets::schema::Ts((*x * 86_400_000_000.0) as i64)
                .to_datetime()
                .format("%b %d")
                .to_string()
        };
        let share = self.y_is_share;
        let y_text = move |y: &f64| {
            if share {
                format!("{:.0}%", 100.0 * y)
            } else {
                format!("{y:.1}")
            }
        };
        chart
            .configure_mesh()
            .y_desc(self.y_label.as_str())
            .x_label_formatter(&date)
            .y_label_formatter(&y_text)
            .x_labels(8)
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        // One line needs no legend: the caption names it.
        let legend = (self.series.len() > 1).then_some(SeriesLabelPosition::UpperRight);
        draw_lines(&mut chart, &self.series, 2, legend)?;
        root.present()?;
        Ok(())
    }
}

/// Horizontal bars, one per labelled value, with an optional reference line (a target).
#[derive(Debug, Clone)]
pub struct BarChart {
    /// The caption above the plot.
    pub title: String,
    /// What the bars measure.
    pub x_label: String,
    /// Whether values are shares, printed as percentages.
    pub is_share: bool,
    /// (label, value) in drawing order, top first.
    pub bars: Vec<(String, f64)>,
    /// A value to draw as a vertical line, such as 100% of the budget.
    pub reference: Option<f64>,
}

impl BarChart {
    /// The chart as an SVG document. The same chart gives the same bytes.
    pub fn to_svg(&self) -> Result<String> {
        let mut svg = String::new();
        let height = 90 + 26 * self.bars.len().max(1) as u32;
        self.draw(SVGBackend::with_string(&mut svg, (WIDTH, height)))
            .map_err(|e| Error::Render(format!("drawing the chart {:?}: {e}", self.title)))?;
        Ok(svg)
    }

    fn draw(&self, backend: SVGBackend<'_>) -> Result<(), Box<dyn std::error::Error + '_>> {
        let values = self.bars.iter().map(|(_, v)| *v).filter(|v| v.is_finite());
        let x_max = values
            .chain(self.reference)
            .fold(0.0f64, f64::max)
            .max(if self.is_share { 1.0 } else { 0.0 });
        let x_max = if x_max > 0.0 { x_max * 1.08 } else { 1.0 };
        let n = self.bars.len().max(1);
        let root = backend.into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, ("sans-serif", 18))
            .margin(14)
            .x_label_area_size(36)
            .y_label_area_size(200)
            .build_cartesian_2d(0f64..x_max, (0..n).into_segmented())?;
        let labels: Vec<String> = self.bars.iter().map(|(l, _)| l.clone()).collect();
        let share = self.is_share;
        chart
            .configure_mesh()
            .x_desc(self.x_label.as_str())
            .x_label_formatter(&move |x: &f64| {
                if share {
                    format!("{:.0}%", 100.0 * x)
                } else {
                    format!("{x:.1}")
                }
            })
            .y_labels(n)
            .y_label_formatter(&move |segment: &SegmentValue<usize>| match segment {
                // plotters also asks for the centre of the segment past the last bar.
                SegmentValue::CenterOf(i) => (n - 1)
                    .checked_sub(*i)
                    .and_then(|row| labels.get(row))
                    .cloned()
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .disable_y_mesh()
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        let colour = Palette99::pick(0).to_rgba();
        chart.draw_series(self.bars.iter().enumerate().map(|(i, (_, value))| {
            let row = n - 1 - i;
            let value = if value.is_finite() { *value } else { 0.0 };
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(row)),
                    (value, SegmentValue::Exact(row + 1)),
                ],
                colour.filled(),
            );
            bar.set_margin(4, 4, 0, 0);
            bar
        }))?;
        if let Some(reference) = self.reference {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![
                    (reference, SegmentValue::Exact(0)),
                    (reference, SegmentValue::Last),
                ],
                RED.stroke_width(2),
            )))?;
        }
        root.present()?;
        Ok(())
    }
}

/// Draws each series as a line with its points marked, in its own colour, and the legend at
/// `legend` when given. Points with a non-finite coordinate are left out.
fn draw_lines<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    series: &[Series],
    marker_radius: u32,
    legend: Option<SeriesLabelPosition>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    for (index, series) in series.iter().enumerate() {
        let colour = Palette99::pick(index).to_rgba();
        let points: Vec<(f64, f64)> = series
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
            .label(series.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        chart.draw_series(
            points
                .into_iter()
                .map(|point| Circle::new(point, marker_radius, colour.filled())),
        )?;
    }
    if let Some(position) = legend {
        chart
            .configure_series_labels()
            .position(position)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .draw()?;
    }
    Ok(())
}

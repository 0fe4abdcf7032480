//! Charts as self-contained SVG, drawn with plotters, for reports and evaluation figures.

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
        for (index, series) in self.series.iter().enumerate() {
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
                    .map(|point| Circle::new(point, 3, colour.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .draw()?;
        root.present()?;
        Ok(())
    }
}

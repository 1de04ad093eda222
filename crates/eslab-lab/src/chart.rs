//! Charts as SVG (plotters' SVG backend: text is left to the SVG viewer, so
//! no font files or fontconfig are needed to draw).

use plotters::prelude::*;

fn drawing<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {e}")
}

/// Draws grouped bars and the legend inside a built chart context.
macro_rules! bars {
    ($ctx:ident, $chart:expr, $base:expr) => {{
        let chart: &Chart = $chart;
        let n = chart.categories.len();
        let label = |x: &f64| {
            chart
                .categories
                .iter()
                .enumerate()
                .find(|(i, _)| ((*i as f64) - *x).abs() < 1e-6)
                .map(|(_, c)| c.clone())
                .unwrap_or_default()
        };
        $ctx.configure_mesh()
            .disable_x_mesh()
            .x_labels(2 * n + 1)
            .x_label_formatter(&label)
            .x_desc(chart.x_label.as_str())
            .y_desc(chart.y_label.as_str())
            .draw()
            .map_err(drawing)?;
        let m = chart.series.len().max(1) as f64;
        let width = 0.8 / m;
        for (j, (name, values)) in chart.series.iter().enumerate() {
            let color = Palette99::pick(j).mix(0.9);
            let bars = values.iter().enumerate().filter(|(_, v)| v.is_finite() && **v > $base).map(|(i, v)| {
                let x0 = i as f64 - 0.4 + j as f64 * width;
                Rectangle::new([(x0, $base), (x0 + width * 0.9, *v)], color.filled())
            });
            $ctx.draw_series(bars)
                .map_err(drawing)?
                .label(name.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        }
        $ctx.configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.85))
            .draw()
            .map_err(drawing)?;
    }};
}

/// A grouped bar chart: one group per category, one bar per series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chart {
    /// The chart's title.
    pub title: String,
    /// What the categories are (x axis).
    pub x_label: String,
    /// What the bars measure (y axis, with unit).
    pub y_label: String,
    /// The groups along the x axis.
    pub categories: Vec<String>,
    /// `(name, one value per category)`; NaN leaves a gap.
    pub series: Vec<(String, Vec<f64>)>,
    /// Logarithmic y axis (for values spanning decades).
    pub log_y: bool,
}

/// Renders `chart` as an SVG document.
pub fn render(chart: &Chart) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 540)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        let values: Vec<f64> =
            chart.series.iter().flat_map(|(_, v)| v.iter().copied()).filter(|v| v.is_finite() && *v > 0.0).collect();
        let max = values.iter().copied().fold(0.0_f64, f64::max);
        let x_range = -0.5..(chart.categories.len().max(1) as f64 - 0.5);
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(chart.title.as_str(), ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(72);
        if chart.log_y {
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            let lo = if min.is_finite() { 10_f64.powf(min.log10().floor()) } else { 1.0 };
            let hi = if max > lo { 10_f64.powf(max.log10().ceil()) } else { lo * 10.0 };
            let mut ctx = builder.build_cartesian_2d(x_range, (lo..hi).log_scale()).map_err(drawing)?;
            bars!(ctx, chart, lo);
        } else {
            let hi = if max > 0.0 { max * 1.15 } else { 1.0 };
            let mut ctx = builder.build_cartesian_2d(x_range, 0.0..hi).map_err(drawing)?;
            bars!(ctx, chart, 0.0);
        }
        root.present().map_err(drawing)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_bars_labels_and_legend_without_fonts() {
        let chart = Chart {
            title: "append".into(),
            x_label: "batch".into(),
            y_label: "events/s".into(),
            categories: vec!["1".into(), "10".into()],
            series: vec![("loop".into(), vec![100.0, 900.0]), ("unnest".into(), vec![120.0, f64::NAN])],
            log_y: true,
        };
        let svg = render(&chart).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("unnest") && svg.contains("events/s"));
        // Background, three drawn bars (the NaN leaves a gap), legend swatches and box.
        assert!(svg.matches("<rect").count() >= 4, "{svg}");
        let linear = render(&Chart { log_y: false, ..chart }).unwrap();
        assert!(linear.contains(">loop<") || linear.contains("loop"), "{linear}");
    }
}

//! The report's charts, drawn as SVG with plotters: lines over the
//! observed window, paired bars, a histogram.

use std::ops::Range;

use plotters::{
    coord::{Shift, types::RangedCoordf64},
    prelude::*,
};

const SIZE: (u32, u32) = (760, 320);
const ORANGE: RGBColor = RGBColor(230, 120, 20);
const GREY: RGBColor = RGBColor(150, 150, 150);

/// A named series of (x, y) points.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// Draws into an SVG string; a drawing error (none is expected: the sizes
/// are fixed) leaves what was drawn.
fn svg(draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), String>) -> String {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        let _ = root
            .fill(&WHITE)
            .map_err(|e| e.to_string())
            .and_then(|()| draw(&root));
        let _ = root.present();
    }
    out
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A titled chart over `x` and `y`, with room for the axes' labels.
fn frame<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
    x: Range<f64>,
    y: Range<f64>,
) -> Result<Chart<'a, 'b>, String> {
    ChartBuilder::on(root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(60)
        .build_cartesian_2d(x, y)
        .map_err(err)
}

/// Lines over `0..x_max` seconds.
pub fn lines(title: &str, y_desc: &str, x_max: f64, series: &[Series]) -> String {
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.1;
    svg(|root| {
        let mut chart = frame(root, title, 0.0..x_max.max(1.0), 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("seconds observed")
            .y_desc(y_desc)
            .draw()
            .map_err(err)?;
        for (i, s) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(err)?
                .label(s.label.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color));
        }
        if !series.is_empty() {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperLeft)
                .draw()
                .map_err(err)?;
        }
        Ok(())
    })
}

/// Two bars per group: `(label, first, second)`, named `names`.
pub fn paired_bars(title: &str, names: [&str; 2], groups: &[(String, f64, f64)]) -> String {
    let y_max = groups.iter().map(|g| g.1.max(g.2)).fold(1.0, f64::max) * 1.15;
    svg(|root| {
        let n = groups.len().max(1) as f64;
        let mut chart = frame(root, title, 0.0..n, 0.0..y_max)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .disable_x_axis()
            .y_desc("per second")
            .draw()
            .map_err(err)?;
        // Each group's name under its bars.
        let group_names = groups.iter().enumerate().map(|(i, g)| {
            Text::new(
                g.0.clone(),
                (i as f64 + 0.1, y_max * 0.97),
                ("sans-serif", 13),
            )
        });
        chart.draw_series(group_names).map_err(err)?;
        for (k, (name, color)) in names.iter().zip([ORANGE, GREY]).enumerate() {
            let bars = groups.iter().enumerate().map(|(i, g)| {
                let v = if k == 0 { g.1 } else { g.2 };
                let x0 = i as f64 + 0.1 + 0.4 * k as f64;
                Rectangle::new([(x0, 0.0), (x0 + 0.38, v)], color.filled())
            });
            chart
                .draw_series(bars)
                .map_err(err)?
                .label(*name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        Ok(())
    })
}

/// A histogram of `values_ms` on a log scale, from 10 us to 100 s.
pub fn lifetimes(title: &str, values_ms: &[f64]) -> String {
    const LOW: f64 = -2.0; // 10^-2 ms
    const HIGH: f64 = 5.0; // 10^5 ms
    const STEP: f64 = 0.25;
    let buckets = ((HIGH - LOW) / STEP) as usize;
    let mut counts = vec![0u64; buckets];
    for &v in values_ms.iter().filter(|v| **v > 0.0) {
        let i = ((v.log10() - LOW) / STEP)
            .floor()
            .clamp(0.0, (buckets - 1) as f64);
        counts[i as usize] += 1;
    }
    let y_max = counts.iter().copied().max().unwrap_or(1).max(1) as f64 * 1.1;
    svg(|root| {
        let mut chart = frame(root, title, LOW..HIGH, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("lifetime (ms, log scale)")
            .y_desc("connections")
            .x_label_formatter(&|x| format!("{}", 10f64.powf(*x)))
            .draw()
            .map_err(err)?;
        let bars = counts.iter().enumerate().map(|(i, &n)| {
            let x0 = LOW + i as f64 * STEP;
            Rectangle::new(
                [(x0, 0.0), (x0 + STEP * 0.9, n as f64)],
                BLUE.mix(0.6).filled(),
            )
        });
        chart.draw_series(bars).map_err(err)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_their_labels_escaped() {
        let line = lines(
            "TIME_WAIT",
            "sockets",
            10.0,
            &[Series {
                label: "a<b & c".into(),
                points: vec![(1.0, 2.0), (2.0, 5.0)],
            }],
        );
        assert!(line.starts_with("<svg"), "{line}");
        assert!(line.contains("a&lt;b &amp; c"), "{line}");
        let bars = paired_bars(
            "rates",
            ["entering", "sustainable"],
            &[("p".into(), 3.0, 1.0)],
        );
        assert!(
            bars.contains("sustainable") && bars.contains("<rect"),
            "{bars}"
        );
        let hist = lifetimes("lifetimes", &[0.5, 1.0, 1000.0, -1.0]);
        assert!(hist.matches("<rect").count() > 20, "{hist}");
    }
}

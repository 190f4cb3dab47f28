//! The loss-curve picture of a run: train and validation loss against characters seen.

use plotters::prelude::*;

use crate::run::MetricsRow;

/// An SVG document plotting `rows`' train and validation losses against tokens seen.
pub fn loss_curve_svg(rows: &[MetricsRow], title: &str) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let points = |loss: fn(&MetricsRow) -> Option<f64>| -> Vec<(f64, f64)> {
            rows.iter()
                .filter_map(|r| {
                    loss(r)
                        .filter(|l| l.is_finite())
                        .map(|l| (r.tokens as f64, l))
                })
                .collect()
        };
        let train = points(|r| r.train_loss);
        let val = points(|r| r.val_loss);
        let all = train.iter().chain(&val);
        let x_max = all.clone().map(|p| p.0).fold(1.0, f64::max);
        let y_max = all.clone().map(|p| p.1).fold(0.5, f64::max) * 1.05;
        let y_min = all
            .map(|p| p.1)
            .fold(f64::INFINITY, f64::min)
            .min(y_max - 0.5)
            * 0.95;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, y_min..y_max)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("characters seen")
            .y_desc("loss (nats per character)")
            .x_label_formatter(&|x| format!("{:.1}M", x / 1e6))
            .draw()
            .map_err(|e| e.to_string())?;
        for (series, color, label) in [(train, BLUE, "train"), (val, RED, "validation")] {
            chart
                .draw_series(LineSeries::new(series, color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

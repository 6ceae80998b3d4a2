//! The report's charts drawn as PNG files: horizontal bars of the medians with min–max
//! whiskers, one file per chart next to the report.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::{
    coord::ranged1d::SegmentValue,
    prelude::*,
    style::{
        register_font,
        text_anchor::{HPos, Pos, VPos},
        FontStyle,
    },
};

use crate::report::Chart;

/// The font the charts are drawn with (Debian's `fonts-dejavu-core`, which
/// `cargo xtask setup` installs when it is missing).
const FONT_FILE: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// The family name the charts ask for.
const FAMILY: &str = "sans-serif";

/// Width of every chart in pixels.
const WIDTH: u32 = 1400;

/// Height of one bar's band, and of the space around the bands, in pixels.
const BAND: u32 = 38;
const FRAME: u32 = 150;

/// Writes every chart as a PNG into `dir`.
pub fn draw_all(charts: &[Chart], dir: &Path) -> Result<()> {
    load_font()?;
    for chart in charts {
        let path = dir.join(&chart.file);
        draw(chart, &path).with_context(|| format!("draw {}", path.display()))?;
    }
    Ok(())
}

/// Registers [`FONT_FILE`] under [`FAMILY`]; plotters keeps the bytes for the whole run.
fn load_font() -> Result<()> {
    let bytes = std::fs::read(FONT_FILE)
        .with_context(|| format!("read {FONT_FILE} (run `cargo xtask setup`)"))?;
    register_font(FAMILY, FontStyle::Normal, Vec::leak(bytes))
        .map_err(|_| anyhow!("{FONT_FILE} is not a usable font"))
}

/// Draws one chart: bars top to bottom in the chart's order.
fn draw(chart: &Chart, path: &Path) -> Result<()> {
    let count = chart.bars.len();
    if count == 0 {
        return Ok(());
    }
    let height = FRAME + BAND * count as u32;
    let root = BitMapBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)?;

    let label_style = TextStyle::from((FAMILY, 15).into_font());
    let label_width = chart
        .bars
        .iter()
        .map(|bar| {
            root.estimate_text_size(&bar.label, &label_style)
                .map(|(w, _)| w)
        })
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .max()
        .unwrap_or(0);
    let top = chart
        .bars
        .iter()
        .map(|bar| bar.value.max)
        .fold(0.0, f64::max);
    // Room right of the longest whisker for its value.
    let x_end = if top > 0.0 { top * 1.15 } else { 1.0 };

    let mut plot = ChartBuilder::on(&root)
        .caption(&chart.title, (FAMILY, 22))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(label_width + 16)
        // A segmented integer range is inclusive: rows 0..=count-1.
        .build_cartesian_2d(0.0..x_end, (0..count - 1).into_segmented())?;
    plot.configure_mesh()
        .disable_y_mesh()
        .light_line_style(WHITE)
        .x_label_formatter(&|x| format!("{x}"))
        .y_labels(count)
        .y_label_style(label_style)
        .y_label_formatter(&|value| match value {
            SegmentValue::CenterOf(row) => chart
                .bars
                .get(count - 1 - row)
                .map(|bar| bar.label.clone())
                .unwrap_or_default(),
            _ => String::new(),
        })
        .x_desc(format!("{} (bar: median; whisker: min–max)", chart.unit))
        .x_label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 15))
        .draw()?;

    // Row 0 is at the bottom: the first bar goes to the top row.
    let row = |i: usize| count - 1 - i;
    let bar_color = RGBColor(70, 130, 180);
    plot.draw_series(chart.bars.iter().enumerate().map(|(i, bar)| {
        let mut rect = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(row(i))),
                (bar.value.median, SegmentValue::Exact(row(i) + 1)),
            ],
            bar_color.mix(0.8).filled(),
        );
        rect.set_margin(7, 7, 0, 0);
        rect
    }))?;
    let whisker = BLACK.stroke_width(2);
    plot.draw_series(chart.bars.iter().enumerate().map(|(i, bar)| {
        let center = SegmentValue::CenterOf(row(i));
        PathElement::new(
            [(bar.value.min, center.clone()), (bar.value.max, center)],
            whisker,
        )
    }))?;
    // Caps and value labels sit at data points with offsets in pixels.
    let cap = |x: f64, i: usize| {
        EmptyElement::at((x, SegmentValue::CenterOf(row(i))))
            + PathElement::new([(0, -6), (0, 6)], whisker)
    };
    plot.draw_series(
        chart
            .bars
            .iter()
            .enumerate()
            .map(|(i, bar)| cap(bar.value.min, i)),
    )?;
    plot.draw_series(
        chart
            .bars
            .iter()
            .enumerate()
            .map(|(i, bar)| cap(bar.value.max, i)),
    )?;
    let value_style =
        TextStyle::from((FAMILY, 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    plot.draw_series(chart.bars.iter().enumerate().map(|(i, bar)| {
        EmptyElement::at((bar.value.max, SegmentValue::CenterOf(row(i))))
            + Text::new(significant(bar.value.median), (10, 0), value_style.clone())
    }))?;
    root.present()?;
    Ok(())
}

/// `value` with about three significant digits.
fn significant(value: f64) -> String {
    let decimals = match value.abs() {
        v if v >= 100.0 => 0,
        v if v >= 10.0 => 1,
        v if v >= 1.0 => 2,
        _ => 3,
    };
    format!("{value:.decimals$}")
}

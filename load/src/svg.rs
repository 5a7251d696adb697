//! Two small plots, written as SVG by hand: a latency distribution (cumulative) and a
//! throughput-over-time line.

use std::fmt::Write;

const W: f64 = 640.0;
const H: f64 = 320.0;
const PAD: f64 = 50.0;

fn frame(title: &str, x_label: &str, y_label: &str, x_max: f64, y_max: f64, body: &str) -> String {
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="20" text-anchor="middle" font-size="14">{title}</text>
<line x1="{PAD}" y1="{}" x2="{}" y2="{}" stroke="black"/>
<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{}" stroke="black"/>
<text x="{}" y="{}" text-anchor="middle">{x_label}</text>
<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">{y_label}</text>
"#,
        W / 2.0,
        H - PAD,
        W - PAD,
        H - PAD,
        H - PAD,
        W / 2.0,
        H - 10.0,
        H / 2.0,
        H / 2.0,
    );
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let x = PAD + f * (W - 2.0 * PAD);
        let y = H - PAD - f * (H - 2.0 * PAD);
        let _ = writeln!(
            svg,
            r#"<text x="{x}" y="{}" text-anchor="middle">{:.1}</text><text x="{}" y="{}" text-anchor="end">{:.0}</text><line x1="{PAD}" y1="{y}" x2="{}" y2="{y}" stroke="lightgray"/>"#,
            H - PAD + 15.0,
            f * x_max,
            PAD - 4.0,
            y + 4.0,
            f * y_max,
            W - PAD,
        );
    }
    svg.push_str(body);
    svg.push_str("</svg>\n");
    svg
}

fn polyline(points: &[(f64, f64)], x_max: f64, y_max: f64) -> String {
    let coords: Vec<String> = points
        .iter()
        .map(|(x, y)| {
            let px = PAD + (x / x_max.max(1e-9)) * (W - 2.0 * PAD);
            let py = H - PAD - (y / y_max.max(1e-9)) * (H - 2.0 * PAD);
            format!("{px:.1},{py:.1}")
        })
        .collect();
    format!(
        r#"<polyline fill="none" stroke="steelblue" stroke-width="2" points="{}"/>"#,
        coords.join(" ")
    )
}

/// Cumulative distribution of latencies in milliseconds (up to the 99.9th percentile).
pub fn latency_cdf(title: &str, samples_ms: &[f64]) -> String {
    let mut sorted = samples_ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return frame(title, "latency (ms)", "% of messages", 1.0, 100.0, "");
    }
    let cut = ((sorted.len() as f64) * 0.999).ceil() as usize;
    let shown = &sorted[..cut.clamp(1, sorted.len())];
    let x_max = shown.last().copied().unwrap_or(1.0).max(0.1);
    let step = (shown.len() / 400).max(1);
    let points: Vec<(f64, f64)> = shown
        .iter()
        .enumerate()
        .step_by(step)
        .map(|(i, ms)| (*ms, 100.0 * (i + 1) as f64 / sorted.len() as f64))
        .collect();
    frame(
        title,
        "latency (ms)",
        "% of messages",
        x_max,
        100.0,
        &polyline(&points, x_max, 100.0),
    )
}

/// Events per second over time, from counts per `bucket_s` seconds.
pub fn throughput(title: &str, counts: &[u64], bucket_s: f64) -> String {
    let per_second: Vec<f64> = counts.iter().map(|c| *c as f64 / bucket_s).collect();
    let x_max = (counts.len() as f64 * bucket_s).max(bucket_s);
    let y_max = per_second.iter().copied().fold(1.0, f64::max) * 1.1;
    let points: Vec<(f64, f64)> = per_second
        .iter()
        .enumerate()
        .map(|(i, v)| (i as f64 * bucket_s, *v))
        .collect();
    frame(
        title,
        "time (s)",
        "messages per second",
        x_max,
        y_max,
        &polyline(&points, x_max, y_max),
    )
}

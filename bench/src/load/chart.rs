//! An SVG chart of round-trip latency against offered load (the `open-loop` points): p50
//! and p99 for the gateway, the echo baseline and the NATS peer, on a logarithmic latency
//! axis (near saturation latency grows by orders of magnitude), with the 2 ms p99 target
//! drawn in.

use std::fmt::Write as _;

use super::OpenLoop;
use super::chat::OpenPoint;
use super::target::Machine;

const W: f64 = 720.0;
const H: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 180.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;

struct Axes {
    x_max: f64,
    y_min: f64,
    y_max: f64,
}

impl Axes {
    fn x(&self, v: f64) -> f64 {
        LEFT + (v / self.x_max) * (W - LEFT - RIGHT)
    }

    fn y(&self, ms: f64) -> f64 {
        let t = (ms.max(self.y_min).log10() - self.y_min.log10()) / (self.y_max.log10() - self.y_min.log10());
        H - BOTTOM - t * (H - TOP - BOTTOM)
    }
}

fn series(svg: &mut String, a: &Axes, points: &[OpenPoint], pick: fn(&OpenPoint) -> f64, line: Line) {
    let coords: Vec<(f64, f64)> =
        points.iter().filter(|p| pick(p).is_finite()).map(|p| (a.x(p.offered_per_sec), a.y(pick(p)))).collect();
    let pts: Vec<String> = coords.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let _ = writeln!(svg, r#"<polyline fill="none" {} points="{}"/>"#, line.stroke(), pts.join(" "));
    for (x, y) in coords {
        let _ = writeln!(svg, r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{}"/>"#, line.color);
    }
}

/// How a series is drawn: its colour, and dashed for p99.
#[derive(Clone, Copy)]
struct Line {
    color: &'static str,
    dashed: bool,
}

impl Line {
    fn stroke(self) -> String {
        let dash = if self.dashed { r#" stroke-dasharray="6,4""# } else { "" };
        format!(r#"stroke="{}" stroke-width="2"{dash}"#, self.color)
    }
}

/// The chart, as a standalone SVG document.
pub fn latency_svg(ol: &OpenLoop, machine: &Machine) -> String {
    let all: Vec<&OpenPoint> =
        ol.points.gateway.iter().chain(ol.points.echo.iter()).chain(ol.points.nats.iter()).flatten().collect();
    let x_max = all.iter().map(|p| p.offered_per_sec).fold(1.0, f64::max) * 1.05;
    let lat = all.iter().flat_map(|p| [p.latency.p50_ms, p.latency.p99_ms]).filter(|v| v.is_finite());
    let hi = lat.clone().fold(2.0, f64::max);
    let lo = lat.fold(2.0, f64::min);
    let a = Axes { x_max, y_min: 10f64.powf(lo.log10().floor()), y_max: 10f64.powf(hi.log10().ceil()) };
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="22" font-size="15" font-weight="bold">Round-trip latency against offered load ({} conversations)</text>"#,
        ol.conversations
    );
    let _ = writeln!(svg, r##"<text x="{LEFT}" y="38" fill="#555">{}</text>"##, escape(&machine.to_string()));
    // Grid and axis labels: decades of latency, fifths of the load axis.
    let mut decade = a.y_min;
    while decade <= a.y_max * 1.0001 {
        let y = a.y(decade);
        let _ = writeln!(svg, r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/>"##, W - RIGHT);
        let _ =
            writeln!(svg, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#, LEFT - 6.0, y + 4.0, ms(decade));
        decade *= 10.0;
    }
    for i in 0..=5 {
        let v = a.x_max * f64::from(i) / 5.0;
        let x = a.x(v);
        let _ = writeln!(svg, r##"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{:.1}" stroke="#eee"/>"##, H - BOTTOM);
        let _ = writeln!(svg, r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{:.0}</text>"#, H - BOTTOM + 18.0, v);
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">offered load (round trips / s)</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 18.0
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(18,{:.1}) rotate(-90)" text-anchor="middle">latency (ms, log scale)</text>"#,
        (TOP + H - BOTTOM) / 2.0
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{:.1}" height="{:.1}" fill="none" stroke="#999"/>"##,
        W - LEFT - RIGHT,
        H - TOP - BOTTOM
    );
    // The target: p99 ≤ 2 ms at half the maximum.
    let (ty, hx) = (a.y(2.0), a.x(ol.max_per_sec / 2.0));
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" x2="{:.1}" y1="{ty:.1}" y2="{ty:.1}" stroke="#c00" stroke-dasharray="2,3"/>"##,
        W - RIGHT
    );
    let _ = writeln!(
        svg,
        r##"<line x1="{hx:.1}" x2="{hx:.1}" y1="{TOP}" y2="{:.1}" stroke="#c00" stroke-dasharray="2,3"/>"##,
        H - BOTTOM
    );
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" fill="#c00">target: p99 ≤ 2 ms at ½ max</text>"##,
        hx + 4.0,
        ty - 5.0
    );
    let blue = Line { color: "#1f5fbf", dashed: false };
    let blue_dash = Line { color: "#1f5fbf", dashed: true };
    let grey = Line { color: "#888", dashed: false };
    let grey_dash = Line { color: "#888", dashed: true };
    let green = Line { color: "#2a8a3e", dashed: false };
    let green_dash = Line { color: "#2a8a3e", dashed: true };
    let mut legend = Vec::new();
    for (points, name, p50, p99) in [
        (&ol.points.gateway, "gateway", blue, blue_dash),
        (&ol.points.echo, "echo", grey, grey_dash),
        (&ol.points.nats, "NATS", green, green_dash),
    ] {
        if let Some(points) = points {
            series(&mut svg, &a, points, |p| p.latency.p50_ms, p50);
            series(&mut svg, &a, points, |p| p.latency.p99_ms, p99);
            legend.extend([(format!("{name} p50"), p50), (format!("{name} p99"), p99)]);
        }
    }
    for (i, (name, line)) in legend.iter().enumerate() {
        let y = TOP + 10.0 + 20.0 * i as f64;
        let x = W - RIGHT + 15.0;
        let _ = writeln!(svg, r#"<line x1="{x}" x2="{}" y1="{y}" y2="{y}" {}/>"#, x + 30.0, line.stroke());
        let _ = writeln!(svg, r#"<text x="{}" y="{}">{name}</text>"#, x + 36.0, y + 4.0);
    }
    svg.push_str("</svg>\n");
    svg
}

fn ms(v: f64) -> String {
    if v >= 1.0 { format!("{v:.0}") } else { format!("{v}") }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

//! Self-contained HTML reports (`evaluate --html`, `audit --html`): one file, thumbnails embedded
//! as JPEG data URLs, no network and no script. Sections of photos (a confusion-matrix cell, a
//! class's misses) stay hidden until their link is followed (CSS `:target`), and every thumbnail
//! is `loading="lazy"`, so a report of 10,000 photos opens as fast as one of 100: the browser
//! decodes only what is on screen.

pub mod audit;
pub mod evaluation;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Result;
use crate::head::history::EpochRecord;
use crate::util::output::{Output, Replace};

/// Longer side of an embedded thumbnail, in pixels.
pub const THUMB_SIDE: u32 = 112;
/// JPEG quality of the thumbnails (about 3 KB each at [`THUMB_SIDE`]).
const THUMB_QUALITY: u8 = 70;
/// The comment on a report's second line: the rule by which a report is replaced.
const MARK: &str = "<!-- headstart report -->";

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f4f4f4}td.name,th.name{text-align:left}
table.confusion td{min-width:48px;text-align:center}table.confusion a{color:inherit;display:block}
.meta{color:#555}.cell{display:none;border:2px solid #48c;padding:8px;margin:12px 0}.cell:target{display:block}
.grid{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0;width:128px;font-size:11px;word-break:break-all}
figure img{display:block;max-width:112px;max-height:112px;background:#eee}
figure.pair{width:256px}figure.pair div{display:flex;gap:8px}
.none{width:112px;height:84px;background:#eee;color:#888;display:flex;align-items:center;justify-content:center}
pre{background:#f7f7f7;padding:8px;overflow:auto}svg text{font-size:11px}";

/// What a report holds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HtmlSummary {
    pub path: String,
    pub bytes: usize,
    /// Photo figures in the file (a photo in two sections counts twice).
    pub figures: usize,
    /// Distinct photos with an embedded thumbnail.
    pub thumbnails: usize,
    /// Sections of photos that open from a link (confusion cells, a class's misses).
    pub cells: usize,
}

impl HtmlSummary {
    /// The summary of the report just written at `path`.
    fn of(path: &Path, figures: usize, thumbs: &Thumbs, cells: usize) -> HtmlSummary {
        HtmlSummary {
            path: path.display().to_string(),
            bytes: std::fs::metadata(path).map_or(0, |m| m.len() as usize),
            figures,
            thumbnails: thumbs.len(),
            cells,
        }
    }

    /// "wrote FILE (2.1 MB: 812 photos, 790 thumbnails)".
    pub fn line(&self) -> String {
        format!(
            "wrote {} ({:.1} MB: {} photos, {} thumbnails{})\n",
            self.path,
            self.bytes as f64 / 1e6,
            self.figures,
            self.thumbnails,
            if self.cells > 0 {
                format!(", {} sections that open from a link", self.cells)
            } else {
                String::new()
            }
        )
    }
}

/// `s` with HTML's special characters escaped (text and attribute values).
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Standard base64 (RFC 4648, with padding).
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut o = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= c.len() {
                o.push(A[(v >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                o.push('=');
            }
        }
    }
    o
}

/// An embedded thumbnail: its data URL and size.
#[derive(Debug, Clone)]
pub struct Thumb {
    pub url: String,
    pub width: u32,
    pub height: u32,
}

/// Thumbnails of photos below a data root, made in parallel; a photo that cannot be read (moved,
/// remote, not an image) has none and is shown as its name.
pub struct Thumbs {
    map: HashMap<String, Thumb>,
}

impl Thumbs {
    /// Thumbnails of `paths` (relative to `root`; duplicates made once). A root that is a URL
    /// gives none.
    pub fn load<'a>(root: &str, paths: impl IntoIterator<Item = &'a str>) -> Thumbs {
        use rayon::prelude::*;
        let mut wanted: Vec<&str> = paths.into_iter().collect();
        wanted.sort_unstable();
        wanted.dedup();
        if root.contains("://") {
            return Thumbs {
                map: HashMap::new(),
            };
        }
        let root = PathBuf::from(root);
        let map = wanted
            .par_iter()
            .filter_map(|p| {
                // A path that leaves the photos' folder (a crafted cache) shows no picture.
                let rel = crate::util::paths::contained(p, &root, "path").ok()?;
                thumb(&root.join(rel)).map(|t| (p.to_string(), t))
            })
            .collect();
        Thumbs { map }
    }

    /// How many photos have a thumbnail.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The `<img>` of `path` (or a grey box with "no preview").
    pub fn img(&self, path: &str) -> String {
        match self.map.get(path) {
            Some(t) => format!(
                "<img loading=\"lazy\" decoding=\"async\" width=\"{}\" height=\"{}\" alt=\"{}\" src=\"{}\">",
                t.width,
                t.height,
                esc(path),
                t.url
            ),
            None => "<div class=\"none\">no preview</div>".into(),
        }
    }

    /// A `<figure>`: the photo, its file name (full path on hover) and caption lines.
    pub fn figure(&self, path: &str, lines: &[String]) -> String {
        let name = path.rsplit('/').next().unwrap_or(path);
        let mut s = format!(
            "<figure title=\"{}\">{}<figcaption>{}",
            esc(path),
            self.img(path),
            esc(name)
        );
        for l in lines {
            let _ = write!(s, "<br>{}", esc(l));
        }
        s + "</figcaption></figure>"
    }
}

fn thumb(file: &Path) -> Option<Thumb> {
    let img = crate::data::decode::thumbnail(file, THUMB_SIDE).ok()?;
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, THUMB_QUALITY)
        .encode_image(&img)
        .ok()?;
    Some(Thumb {
        url: format!("data:image/jpeg;base64,{}", base64(&bytes)),
        width: img.width(),
        height: img.height(),
    })
}

/// A table: a header row and rows of cells (already HTML); the first column is left-aligned.
pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::from("<table><tr>");
    for (i, h) in head.iter().enumerate() {
        let class = if i == 0 { " class=\"name\"" } else { "" };
        let _ = write!(s, "<th{class}>{}</th>", esc(h));
    }
    s.push_str("</tr>");
    for r in rows {
        s.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            let class = if i == 0 { " class=\"name\"" } else { "" };
            let _ = write!(s, "<td{class}>{c}</td>");
        }
        s.push_str("</tr>");
    }
    s + "</table>"
}

/// An epoch and its train and validation values.
type Point = (f64, Option<f64>, Option<f64>);

/// Learning curves as an inline SVG: loss (left) and accuracy (right), train solid and validation
/// dashed; empty for no epochs.
pub fn curves_svg(epochs: &[EpochRecord]) -> String {
    if epochs.is_empty() {
        return String::new();
    }
    let loss: Vec<Point> = epochs
        .iter()
        .map(|e| (e.epoch as f64, Some(e.loss), e.val_loss))
        .collect();
    let acc: Vec<Point> = epochs
        .iter()
        .map(|e| (e.epoch as f64, Some(e.accuracy), e.val_accuracy))
        .collect();
    format!(
        "<svg width=\"840\" height=\"260\" viewBox=\"0 0 840 260\" role=\"img\">{}{}</svg>",
        panel(&loss, "loss", 0.0),
        panel(&acc, "accuracy", 420.0)
    )
}

/// One panel of [`curves_svg`] at horizontal offset `x0`.
fn panel(points: &[Point], title: &str, x0: f64) -> String {
    let (w, h, l, t) = (380.0, 200.0, x0 + 40.0, 30.0);
    let values = points.iter().flat_map(|p| [p.1, p.2]).flatten();
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, lo + 0.5)
    };
    let last = points.last().map_or(1.0, |p| p.0).max(2.0);
    let first = points.first().map_or(1.0, |p| p.0);
    let px = |e: f64| l + (e - first) / (last - first).max(1.0) * w;
    let py = |v: f64| t + h - (v - lo) / (hi - lo) * h;
    let line = |pick: fn(&Point) -> Option<f64>, dash: &str| {
        let pts: Vec<String> = points
            .iter()
            .filter_map(|p| pick(p).map(|v| format!("{:.1},{:.1}", px(p.0), py(v))))
            .collect();
        if pts.is_empty() {
            return String::new();
        }
        format!(
            "<polyline fill=\"none\" stroke=\"#36c\" stroke-width=\"2\"{dash} points=\"{}\"/>",
            pts.join(" ")
        )
    };
    format!(
        "<text x=\"{l}\" y=\"18\">{title}: train (solid), validation (dashed)</text>\
         <rect x=\"{l}\" y=\"{t}\" width=\"{w}\" height=\"{h}\" fill=\"none\" stroke=\"#999\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{hi:.3}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{lo:.3}</text>\
         <text x=\"{l}\" y=\"{}\">epoch {first}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{last}</text>{}{}",
        l - 4.0,
        t + 8.0,
        l - 4.0,
        t + h,
        t + h + 16.0,
        l + w,
        t + h + 16.0,
        line(|p| p.1, ""),
        line(|p| p.2, " stroke-dasharray=\"6 4\""),
    )
}

/// Whether `p` holds a headstart HTML report (the rule by which one is replaced).
fn is_report(p: &Path) -> bool {
    std::fs::read(p)
        .is_ok_and(|b| b.starts_with(b"<!doctype html>\n") && b[16..].starts_with(MARK.as_bytes()))
}

fn output<'a>(path: &'a Path, inputs: &[&Path]) -> Output<'a> {
    Output::new(path)
        .inputs(inputs.iter().copied())
        .replace(Replace::If {
            what: "a headstart HTML report",
            check: &is_report,
        })
}

/// Refuses, before any work, a report path that would replace something else (an input, a file
/// that is not a headstart report) or whose folder does not exist.
pub fn check(path: &Path, inputs: &[&Path]) -> Result<()> {
    output(path, inputs).check()
}

/// Writes a report: the page around `body` (a title, the style), replacing only an earlier
/// headstart report, never one of `inputs`.
pub fn write(path: &Path, title: &str, body: &str, inputs: &[&Path]) -> Result<()> {
    check(path, inputs)?;
    let page = format!(
        "<!doctype html>\n{MARK}\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{}</title><style>{STYLE}</style></head>\
         <body><h1>{}</h1><p class=\"meta\">headstart {}</p>\n{body}\n</body></html>\n",
        esc(title),
        esc(title),
        env!("CARGO_PKG_VERSION")
    );
    output(path, inputs).write_bytes(page.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::history::History;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        // RFC 4648 section 10.
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, coded) in cases {
            assert_eq!(base64(plain.as_bytes()), coded, "{plain}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn escaping_leaves_no_markup() {
        assert_eq!(
            esc("<img src=\"x\" onerror='a&b'>"),
            "&lt;img src=&quot;x&quot; onerror=&#39;a&amp;b&#39;&gt;"
        );
    }

    #[test]
    fn curves_draw_one_line_per_series_present() {
        let csv = |rows: &str| History::parse_csv(&format!("{}\n{rows}", History::CSV_HEADER));
        let with_val = curves_svg(&csv(
            "1,1.0,0.5,0.9,0.5,1e-3,0.1\n2,0.5,0.6,0.8,0.6,1e-3,0.1",
        ));
        assert_eq!(with_val.matches("<polyline").count(), 4);
        let without = curves_svg(&csv("1,1.0,0.5,,,1e-3,0.1\n2,0.5,0.6,,,1e-3,0.1"));
        assert_eq!(without.matches("<polyline").count(), 2);
        assert!(curves_svg(&[]).is_empty());
    }
}

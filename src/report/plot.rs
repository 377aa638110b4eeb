//! Pictures of a run (plotters, PNG): learning curves of `train-head`, and the confusion matrix, ROC
//! curve and top-losses grid of `evaluate` (the markdown report that shows them is
//! [`crate::report::markdown`]).

use crate::util::output::{Output, Replace};
use std::path::Path;

use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::head::fit::History;
use crate::report::metrics::Metrics;

fn perr(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |e| {
        Error::Config(format!("{}: cannot draw the plot: {e} (plots need a TrueType font: apt install fonts-dejavu-core)", path.display()))
    }
}

fn e<T: std::fmt::Debug>(x: T) -> String {
    format!("{x:?}")
}

/// Draws on a white RGB canvas of `size` and writes it to `path` as PNG (encoded by the `image`
/// crate headstart already uses, so plotters needs no encoder of its own).
type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn png(
    path: &Path,
    (w, h): (u32, u32),
    draw: impl FnOnce(&Area) -> std::result::Result<(), String>,
) -> Result<()> {
    png_over(
        path,
        image::RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255])),
        draw,
    )
}

/// Draws over `background` (plotters on its pixels) and writes it as PNG.
fn png_over(
    path: &Path,
    background: image::RgbImage,
    draw: impl FnOnce(&Area) -> std::result::Result<(), String>,
) -> Result<()> {
    let err = perr(path);
    let (w, h) = background.dimensions();
    let mut buf = background.into_raw();
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        draw(&root).map_err(&err)?;
        root.present().map_err(|x| err(e(x)))?;
    }
    let img = image::RgbImage::from_raw(w, h, buf).ok_or_else(|| err("canvas size".into()))?;
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|x| Error::Config(format!("{}: cannot write the plot: {x}", path.display())))?;
    let bytes = signed(bytes);
    let out = Output::new(path).replace(picture_rule());
    out.write(|tmp| std::fs::write(tmp, &bytes).map_err(|e| Error::io(tmp, e)))
}

/// A report's pictures are replaced on each run, but only headstart's own: never a user's picture,
/// a photo or a CSV that happens to have the name.
fn picture_rule() -> Replace<'static> {
    Replace::If {
        what: "a picture headstart drew",
        check: &is_ours,
    }
}

/// Refuses `path` as a picture's place before any work, by the rule the drawing follows (nothing
/// there: nothing to refuse; its folder is made when the picture is drawn).
pub fn check_picture(path: &Path) -> Result<()> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    Output::new(path).replace(picture_rule()).check()
}

/// The PNG text chunk that marks a picture as headstart's.
const SIGNATURE: &[u8] = b"Software\0headstart";

/// `png` with a `tEXt` chunk `Software: headstart`.
fn signed(png: Vec<u8>) -> Vec<u8> {
    with_chunk(png, b"tEXt", SIGNATURE)
}

/// `png` with a chunk of `kind` holding `data` after its header chunk (IHDR, bytes 8..33).
fn with_chunk(png: Vec<u8>, kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    const AFTER_IHDR: usize = 8 + 4 + 4 + 13 + 4;
    if png.len() < AFTER_IHDR {
        return png;
    }
    let mut chunk = Vec::with_capacity(12 + data.len());
    chunk.extend_from_slice(&(data.len() as u32).to_be_bytes());
    chunk.extend_from_slice(kind);
    chunk.extend_from_slice(data);
    chunk.extend_from_slice(&crc32fast::hash(&chunk[4..]).to_be_bytes());
    let mut out = png;
    out.splice(AFTER_IHDR..AFTER_IHDR, chunk);
    out
}

/// Whether `p` is a PNG that headstart drew: its signature chunk near the start, or (a picture of
/// a release before the signature) nothing but the chunks its encoder writes, IHDR, IDAT and IEND,
/// where other tools add at least a colour space, a resolution or their name.
fn is_ours(p: &Path) -> bool {
    const MAX: u64 = 64 << 20;
    if std::fs::metadata(p).map_or(true, |m| !m.is_file() || m.len() > MAX) {
        return false;
    }
    let Ok(b) = std::fs::read(p) else {
        return false;
    };
    if !b.starts_with(b"\x89PNG\r\n\x1a\n") {
        return false;
    }
    let head = &b[..b.len().min(128)];
    if head.windows(SIGNATURE.len()).any(|w| w == SIGNATURE) {
        return true;
    }
    let mut at = 8;
    while at + 8 <= b.len() {
        let len = u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize;
        let kind = &b[at + 4..at + 8];
        if !matches!(kind, b"IHDR" | b"IDAT" | b"IEND") {
            return false;
        }
        if kind == b"IEND" {
            return true;
        }
        at = at.saturating_add(12).saturating_add(len);
    }
    false
}

/// Loss and accuracy per epoch (training and validation), two panels side by side.
pub fn learning_curves(h: &History, path: &Path) -> Result<()> {
    png(path, (1100, 420), |root| {
        let (left, right) = root.split_horizontally(550);
        let n = h.epochs.len().max(2) as f64;
        let series = |get: fn(&crate::head::fit::EpochRecord) -> Option<f64>| -> Vec<(f64, f64)> {
            h.epochs
                .iter()
                .filter_map(|r| get(r).map(|v| (r.epoch as f64, v)))
                .collect()
        };
        let panels = [
            (
                &left,
                "loss",
                series(|r| Some(r.loss)),
                series(|r| r.val_loss),
            ),
            (
                &right,
                "accuracy",
                series(|r| Some(r.accuracy)),
                series(|r| r.val_accuracy),
            ),
        ];
        for (area, name, train, val) in panels {
            let all: Vec<f64> = train.iter().chain(&val).map(|p| p.1).collect();
            let (lo, hi) = all
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            let pad = ((hi - lo) * 0.05).max(1e-3);
            let mut chart = ChartBuilder::on(area)
                .caption(name, ("sans-serif", 22))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(1f64..n, (lo - pad)..(hi + pad))
                .map_err(e)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc(name)
                .draw()
                .map_err(e)?;
            chart
                .draw_series(LineSeries::new(train, BLUE.stroke_width(2)))
                .map_err(e)?
                .label(format!("train {name}"))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE.stroke_width(2)));
            if !val.is_empty() {
                chart
                    .draw_series(LineSeries::new(val, RED.stroke_width(2)))
                    .map_err(e)?
                    .label(format!("val {name}"))
                    .legend(|(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], RED.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(if name == "loss" {
                    SeriesLabelPosition::UpperRight
                } else {
                    SeriesLabelPosition::LowerRight
                })
                .draw()
                .map_err(e)?;
        }
        Ok(())
    })
}

/// The confusion matrix as a heat map with the counts written in (rows: true, columns: predicted).
pub fn confusion(m: &Metrics, path: &Path) -> Result<()> {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let k = m.confusion.len();
    let side = (160 + 90 * k as u32).clamp(360, 1400);
    png(path, (side + 80, side), |root| {
        let names: Vec<String> = m.per_class.iter().map(|c| c.class.clone()).collect();
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("confusion matrix (accuracy {:.4})", m.accuracy),
                ("sans-serif", 22),
            )
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(90)
            .build_cartesian_2d((0..k - 1).into_segmented(), (0..k - 1).into_segmented())
            .map_err(e)?;
        let name = |v: &SegmentValue<usize>, flip: bool| match v {
            SegmentValue::CenterOf(i) if *i < k => {
                names[if flip { k - 1 - *i } else { *i }].clone()
            }
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("predicted")
            .y_desc("true")
            .x_labels(k)
            .y_labels(k)
            .x_label_formatter(&|v| name(v, false))
            .y_label_formatter(&|v| name(v, true))
            .draw()
            .map_err(e)?;
        let max = m
            .confusion
            .iter()
            .flatten()
            .copied()
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let centre = Pos::new(HPos::Center, VPos::Center);
        for (t, row) in m.confusion.iter().enumerate() {
            for (p, &v) in row.iter().enumerate() {
                let y = k - 1 - t;
                let shade = 1.0 - 0.85 * (v as f64 / max);
                let c = RGBColor((255.0 * shade) as u8, (255.0 * shade) as u8, 255);
                let cell = [
                    (SegmentValue::Exact(p), SegmentValue::Exact(y)),
                    (SegmentValue::Exact(p + 1), SegmentValue::Exact(y + 1)),
                ];
                chart
                    .draw_series(std::iter::once(Rectangle::new(cell, c.filled())))
                    .map_err(e)?;
                let text_color = if shade < 0.5 { WHITE } else { BLACK };
                chart
                    .draw_series(std::iter::once(Text::new(
                        v.to_string(),
                        (SegmentValue::CenterOf(p), SegmentValue::CenterOf(y)),
                        ("sans-serif", 26)
                            .into_font()
                            .color(&text_color)
                            .pos(centre),
                    )))
                    .map_err(e)?;
            }
        }
        Ok(())
    })
}

/// The most confidently wrong images as a grid (fastai's `plot_top_losses`): a thumbnail of each, with
/// its true class, the predicted class and the probability given to the true class. `root` is the
/// folder the paths are relative to; an image that cannot be read is drawn as a grey tile.
pub fn top_losses(m: &Metrics, root: &Path, path: &Path) -> Result<()> {
    const TILE: u32 = 200;
    const TEXT: u32 = 58;
    let n = m.top_losses.len().max(1) as u32;
    let cols = n.min(4);
    let rows = n.div_ceil(cols);
    let (w, h) = (cols * (TILE + 10) + 10, rows * (TILE + TEXT + 10) + 50);
    let mut canvas = image::RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
    let origin = |i: u32| {
        (
            10 + (i % cols) * (TILE + 10),
            50 + (i / cols) * (TILE + TEXT + 10),
        )
    };
    for (i, t) in m.top_losses.iter().enumerate() {
        let (x0, y0) = origin(i as u32);
        let tile = crate::data::decode::thumbnail(&root.join(&t.path), TILE).unwrap_or_else(|_| {
            image::RgbImage::from_pixel(TILE, TILE, image::Rgb([200, 200, 200]))
        });
        let (tw, th) = tile.dimensions();
        image::imageops::replace(
            &mut canvas,
            &tile,
            (x0 + (TILE - tw) / 2) as i64,
            (y0 + (TILE - th) / 2) as i64,
        );
    }
    png_over(path, canvas, |area| {
        let title = format!(
            "top {} losses: most confidently wrong (true / predicted / p(true))",
            m.top_losses.len()
        );
        area.draw(&Text::new(title, (10, 14), ("sans-serif", 20)))
            .map_err(e)?;
        for (i, t) in m.top_losses.iter().enumerate() {
            let (x0, y0) = origin(i as u32);
            let (x, y) = (x0 as i32, (y0 + TILE) as i32);
            let file = Path::new(&t.path)
                .file_name()
                .map_or(t.path.clone(), |f| f.to_string_lossy().into_owned());
            for (k, line) in [
                format!("{} / {}", t.label, t.predicted),
                format!("p(true) {:.3}", t.p_true),
                file,
            ]
            .into_iter()
            .enumerate()
            {
                area.draw(&Text::new(
                    line,
                    (x, y + 4 + 18 * k as i32),
                    ("sans-serif", 15),
                ))
                .map_err(e)?;
            }
        }
        if m.top_losses.is_empty() {
            area.draw(&Text::new("no mistakes", (10, 60), ("sans-serif", 18)))
                .map_err(e)?;
        }
        Ok(())
    })
}

/// Points of the ROC curve (false positive rate, true positive rate) of `scores` for `positive`.
pub fn roc_points(scores: &[f64], positive: &[bool]) -> Vec<(f64, f64)> {
    let p = positive.iter().filter(|&&b| b).count().max(1) as f64;
    let n = positive.iter().filter(|&&b| !b).count().max(1) as f64;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp) = (0f64, 0f64);
    let mut pts = vec![(0.0, 0.0)];
    for (i, &j) in order.iter().enumerate() {
        if positive[j] {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        // One point per distinct score.
        if order.get(i + 1).is_none_or(|&nx| scores[nx] != scores[j]) {
            pts.push((fp / n, tp / p));
        }
    }
    pts
}

/// The ROC curve of a binary head, AUC in the title.
pub fn roc(scores: &[f64], positive: &[bool], auc: f64, class: &str, path: &Path) -> Result<()> {
    png(path, (520, 500), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("ROC, positive class '{class}' (AUC {auc:.4})"),
                ("sans-serif", 20),
            )
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..1f64, 0f64..1.0001f64)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("false positive rate")
            .y_desc("true positive rate")
            .draw()
            .map_err(e)?;
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, 0.0), (1.0, 1.0)],
                BLACK.mix(0.3),
            ))
            .map_err(e)?;
        chart
            .draw_series(LineSeries::new(
                roc_points(scores, positive),
                BLUE.stroke_width(2),
            ))
            .map_err(e)?;
        Ok(())
    })
}

/// Precision-recall points of `scores` against `positive`: (recall, precision) at each distinct
/// score, highest first, from (0, 1).
pub fn pr_points(scores: &[f64], positive: &[bool]) -> Vec<(f64, f64)> {
    let p = positive.iter().filter(|&&b| b).count().max(1) as f64;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut seen) = (0f64, 0f64);
    let mut pts = vec![(0.0, 1.0)];
    for (i, &j) in order.iter().enumerate() {
        tp += f64::from(u8::from(positive[j]));
        seen += 1.0;
        if order.get(i + 1).is_none_or(|&nx| scores[nx] != scores[j]) {
            pts.push((tp / p, tp / seen));
        }
    }
    pts
}

/// One precision-recall curve per class of a multi-label head (`curves`: class name with its
/// average precision, and each image's probability and truth), in one chart.
pub fn pr_curves(curves: &[(String, Vec<(f64, bool)>)], path: &Path) -> Result<()> {
    png(path, (620, 520), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("precision-recall per class", ("sans-serif", 20))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..1.0001f64, 0f64..1.0001f64)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("recall")
            .y_desc("precision")
            .draw()
            .map_err(e)?;
        for (k, (name, pairs)) in curves.iter().enumerate() {
            let colour = Palette99::pick(k).to_rgba();
            let (s, p): (Vec<f64>, Vec<bool>) = pairs.iter().copied().unzip();
            chart
                .draw_series(LineSeries::new(pr_points(&s, &p), colour.stroke_width(2)))
                .map_err(e)?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerLeft)
            .draw()
            .map_err(e)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pr_points_of_a_ranking_with_a_tie() {
        let pts = pr_points(&[0.9, 0.5, 0.5, 0.1], &[true, true, false, false]);
        assert_eq!(
            pts,
            vec![(0.0, 1.0), (0.5, 1.0), (1.0, 2.0 / 3.0), (1.0, 0.5)]
        );
    }

    #[test]
    fn roc_points_of_a_perfect_and_a_tied_ranking() {
        let pts = roc_points(&[0.9, 0.8, 0.2, 0.1], &[true, true, false, false]);
        assert_eq!(
            pts,
            vec![(0.0, 0.0), (0.0, 0.5), (0.0, 1.0), (0.5, 1.0), (1.0, 1.0)]
        );
        let tied = roc_points(&[0.5, 0.5], &[true, false]);
        assert_eq!(tied, vec![(0.0, 0.0), (1.0, 1.0)]);
    }

    /// A drawn picture carries headstart's signature chunk and still decodes; it is replaced by
    /// the next drawing, while a user's PNG of that name is refused and kept.
    #[test]
    fn only_pictures_headstart_drew_are_replaced() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("curves.png");
        let h = History {
            epochs: (1..=3)
                .map(|e| crate::head::fit::EpochRecord {
                    epoch: e,
                    loss: 1.0 / e as f64,
                    accuracy: 0.5,
                    val_loss: None,
                    val_accuracy: None,
                    lr: 0.1,
                    seconds: 0.0,
                })
                .collect(),
            kept_epoch: 3,
            stopped_early: false,
        };
        learning_curves(&h, &p).unwrap();
        assert!(is_ours(&p));
        assert_eq!(image::open(&p).unwrap().width(), 1100);
        learning_curves(&h, &p).unwrap();
        // A picture of an earlier release (the encoder's chunks only, no signature) is replaced.
        image::RgbImage::new(2, 2).save(&p).unwrap();
        learning_curves(&h, &p).unwrap();
        assert!(is_ours(&p));
        // Another tool's PNG (its name in a text chunk) is refused and kept.
        let mut plain = Vec::new();
        image::RgbImage::new(2, 2)
            .write_to(
                &mut std::io::Cursor::new(&mut plain),
                image::ImageFormat::Png,
            )
            .unwrap();
        let mine = with_chunk(plain, b"tEXt", b"Software\0GIMP");
        assert_eq!(image::load_from_memory(&mine).unwrap().width(), 2);
        std::fs::write(&p, &mine).unwrap();
        let e = learning_curves(&h, &p).unwrap_err().to_string();
        assert!(e.contains("not a picture headstart drew"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), mine);
        assert!(check_picture(&p).is_err());
    }
}

//! `train-head` on a train split over the memory budget: a layer-spec head trained with the split
//! streamed from the cache ([`crate::head::stream`]), its validation rows read into memory.

use std::time::Instant;

use crate::util::limits::size_text;

use super::*;

/// A train split over the memory budget: a layer-spec head trained with the split streamed from
/// disk block by block ([`stream`]); the validation rows are read into memory.
pub(super) fn train_streamed(
    cfg: &TrainHeadConfig,
    cache: &FeatureCache,
    (budget, train_bytes): (u64, u64),
    outs: (Output<'static>, Output<'static>),
    rep: &dyn Reporter,
    t0: Instant,
) -> Result<TrainHeadSummary> {
    let meta = &cache.meta;
    let over = format!(
        "the train split of {} is {} as float32, over the memory budget of {} (--memory)",
        cfg.features.display(),
        size_text(train_bytes),
        size_text(budget)
    );
    if let HeadChoice::Logistic { .. } = cfg.head {
        return Err(Error::invalid(
            "memory",
            format!("{over}: the logistic baseline needs it in memory; give a larger --memory, or a layer spec (e.g. --head none) or --recipe auto to train on it streamed"),
        ));
    }
    if meta.multi_label && matches!(cfg.head, HeadChoice::Auto { .. }) {
        return Err(Error::invalid(
            "memory",
            format!("{over}: the default recipe is not streamed on a multi-label cache; give a layer spec (e.g. --head none or --head dense:256:relu) to train on it streamed, or a larger --memory"),
        ));
    }
    let (labels, tags) = train_labels(cfg, cache, &over, budget)?;
    check_train_classes(&cfg.features, &cache.meta, &labels)?;
    let val_bytes =
        cache.split_len("val").unwrap_or(0) as u64 * train_bytes / labels.len().max(1) as u64;
    if val_bytes > budget / 2 {
        return Err(Error::invalid(
            "memory",
            format!(
                "{over}, and its val split ({}) does not fit half of it: give a larger --memory",
                size_text(val_bytes)
            ),
        ));
    }
    let mut v = validation_rows(cache, &labels, cfg.val_split, cfg.seed)?;
    warn_untrained(&cache.meta, (&labels, tags.as_ref()), &v.train, rep);
    let excluded = match &cfg.exclude {
        Some(_) => exclude(cfg, cache, &cache.read_paths("train")?, &mut v)?,
        None => None,
    };
    let raw_row = train_bytes / labels.len().max(1) as u64;
    let blocks = stream::Blocks::for_budget(budget, raw_row as usize, cfg.block_rows);
    let blocks_bytes = 6 * blocks.rows as u64 * raw_row;
    if blocks_bytes > budget {
        rep.report(Event::Warning(&format!(
            "--block-rows {}: two blocks and their pooled copies hold {}, over the memory budget of {} (--memory); the run takes that much, or give fewer rows",
            blocks.rows,
            size_text(blocks_bytes),
            size_text(budget)
        )));
    }
    let (vx, vy, vt) = streamed_validation(cfg, cache, &mut v, (&labels, tags.as_ref()), blocks)?;
    if (vx.len() * 4) as u64 > budget / 2 {
        return Err(Error::invalid(
            "memory",
            format!("{over}, and its {} validation rows do not fit half of it: give a lower --val-split or a larger --memory", vy.len()),
        ));
    }
    let n_blocks = labels.len().div_ceil(blocks.rows);
    let info = RunInfo {
        train_rows: v.train.len(),
        val_rows: vy.len(),
        val_from: v.from.clone(),
        excluded,
        streamed: Some(
            serde_json::json!({"budget_bytes": budget, "block_rows": blocks.rows, "blocks": n_blocks}),
        ),
    };
    announce(cfg, meta, &info, vx.ncols(), rep)?;
    rep.report(Event::Line(&format!(
        "streamed: {over}; read in {n_blocks} blocks of {} rows, the next block read while one trains",
        blocks.rows
    )));
    let train_labels = match &tags {
        Some(t) => Labels::Tags(t.view()),
        None => Labels::Classes(&labels),
    };
    let val_labels = match &vt {
        Some(t) => Labels::Tags(t.view()),
        None => Labels::Classes(&vy),
    };
    let s = stream::Streamed {
        cache,
        pool: cfg.pool,
        train: &v.train,
        labels: train_labels,
        classes: meta.classes.len(),
        val: (!vy.is_empty()).then_some((&vx, val_labels)),
        blocks,
        standardize: None,
    };
    let say = |s: String| rep.report(Event::Line(&s));
    let t = match &cfg.head {
        HeadChoice::Mlp(tc) => {
            say(table_header());
            mlp_trained(tc, stream::fit_streamed(tc, &s, |r| say(table_row(r)))?)
        }
        HeadChoice::Auto { threads } => streamed_auto(cfg, s, &labels, (*threads, budget), rep)?,
        HeadChoice::Logistic { .. } => {
            return Err(Error::Config(
                "internal: the logistic baseline is not streamed".into(),
            ))
        }
    };
    let thresholds =
        vt.map(|targets| thresholds_on(cfg, &t.network, (&vx, targets), &meta.classes, rep));
    write_head(cfg, meta, t, thresholds, info, outs, rep, t0)
}

/// The train split's labels and, for a multi-label cache, its targets (`[rows, classes]` as
/// float32, held besides the blocks: refused when they take over half the budget).
fn train_labels(
    cfg: &TrainHeadConfig,
    cache: &FeatureCache,
    over: &str,
    budget: u64,
) -> Result<(Vec<u32>, Option<Array2<f32>>)> {
    let meta = &cache.meta;
    Ok(if meta.multi_label {
        let tag_bytes = cache.split_len("train")? as u64 * meta.classes.len() as u64 * 4;
        if tag_bytes > budget / 2 {
            return Err(Error::invalid(
                "memory",
                format!(
                    "{over}, and its targets ({} classes a row) take {}, over half of it: give a larger --memory",
                    meta.classes.len(),
                    size_text(tag_bytes)
                ),
            ));
        }
        let lists = cache.read_lists("train")?;
        let tags = targets(&lists, meta.classes.len()).ok_or_else(|| {
            Error::cache(
                &cfg.features,
                "a multi-label train split without its targets",
            )
        })?;
        (lists.labels, Some(tags))
    } else {
        (cache.read_labels("train")?, None)
    })
}

/// A multi-label head's thresholds, chosen on the validation rows `vx` and their `targets` (out of
/// sample; none without validation rows, as [`crate::head::tags::decide`] takes it).
fn thresholds_on(
    cfg: &TrainHeadConfig,
    net: &Network,
    (vx, targets): (&Array2<f32>, Array2<f32>),
    classes: &[String],
    rep: &dyn Reporter,
) -> (Vec<f32>, String) {
    let val = (vx.nrows() > 0).then(|| {
        let logits = net.logits_batched(vx, 256);
        (logits.mapv(crate::head::activation::sigmoid), targets)
    });
    crate::head::tags::decide(cfg.threshold, val, classes, rep)
}

/// The auto recipe on a streamed split ([`recipe::auto_at_scale`]): the candidates scored on a
/// seeded, stratified subsample of the train rows (read into memory: at most
/// [`recipe::SUBSAMPLE_ROWS`], and at most a quarter of the `budget` bytes as pooled float32) and
/// the validation rows, the winner trained on every train row streamed.
fn streamed_auto(
    cfg: &TrainHeadConfig,
    s: stream::Streamed,
    labels: &[u32],
    (threads, budget): (usize, u64),
    rep: &dyn Reporter,
) -> Result<Trained> {
    let say = |line: String| rep.report(Event::Line(&line));
    let meta = &s.cache.meta;
    let width = cfg.pool.output_dim(&meta.feature_shape, &meta.layout)?;
    let fits = (budget / 4 / (width.max(1) as u64 * 4)) as usize;
    let sub = crate::head::validation::stratified_sample(
        s.train.to_vec(),
        labels,
        s.classes,
        fits.min(recipe::SUBSAMPLE_ROWS).max(s.classes),
        cfg.seed ^ 0x5ca1e,
    );
    say(format!(
        "auto: the candidates are scored on a seeded, stratified subsample of {} of the {} train rows (the split is streamed)",
        sub.len(),
        s.train.len()
    ));
    let val = match s.val {
        Some((vx, Labels::Classes(vy))) => Some((vx, vy)),
        Some((_, Labels::Tags(_))) => {
            return Err(Error::Config(
                "internal: the default recipe is not streamed on multi-label rows".into(),
            ))
        }
        None => None,
    };
    let (report, fit) = {
        let x = gather_rows(s.cache, cfg.pool, labels.len(), s.blocks, &sub)?;
        let y: Vec<u32> = sub.iter().map(|&i| labels[i]).collect();
        let (all, val_idx): (Vec<usize>, Vec<usize>) = (
            (0..sub.len()).collect(),
            (0..val.map_or(0, |(_, y)| y.len())).collect(),
        );
        let data = AutoData {
            x: std::borrow::Cow::Owned(x),
            y: &y,
            train: &all,
            val: val.map(|(vx, vy)| (vx, vy, val_idx.as_slice())),
            extra: &[],
            classes: s.classes,
            seed: cfg.seed,
            threads,
        };
        recipe::auto_at_scale(data, s.train.len(), rep)?
    };
    let mut settings = report.json();
    settings["subsample_rows"] = sub.len().into();
    let (network, history, spec) = match fit {
        recipe::ScaledFit::Subsample(net, history, spec) => (net, history, spec),
        recipe::ScaledFit::Streamed { config, mean, std } => {
            let val = val.map(|(vx, vy)| ((vx - &mean) / &std, vy));
            let streamed = stream::Streamed {
                labels: Labels::Classes(labels),
                val: val.as_ref().map(|(x, y)| (x, Labels::Classes(y))),
                standardize: Some((&mean, &std)),
                ..s
            };
            say(table_header());
            let (mut net, history) =
                stream::fit_streamed(&config, &streamed, |r| say(table_row(r)))?;
            recipe::fold_standardization(&mut net, &mean, &std)?;
            (net, history, config.spec)
        }
    };
    Ok(Trained::auto((network, history, spec), settings, None))
}

/// The validation rows of a streamed run, pooled, in `v.val`'s order, with their labels and (a
/// multi-label cache, whose train `tags` are given) targets: from the val split, or read from
/// `train` block by block.
fn streamed_validation(
    cfg: &TrainHeadConfig,
    cache: &FeatureCache,
    v: &mut crate::head::validation::Validation,
    (labels, tags): (&[u32], Option<&Array2<f32>>),
    blocks: stream::Blocks,
) -> Result<ValRows> {
    let meta = &cache.meta;
    let rows = |t: &Array2<f32>| t.select(ndarray::Axis(0), &v.val);
    if let Some(s) = v.split.take() {
        let n = s.len();
        let t = match tags {
            Some(_) => Some(rows(&targets(&s, meta.classes.len()).ok_or_else(|| {
                Error::cache(&cfg.features, "a multi-label val split without its targets")
            })?)),
            None => None,
        };
        let y = v.val.iter().map(|&i| s.labels[i]).collect();
        let x = cfg
            .pool
            .apply(s.features, n, &meta.feature_shape, &meta.layout)?;
        return Ok((x.select(ndarray::Axis(0), &v.val), y, t));
    }
    let x = gather_rows(cache, cfg.pool, labels.len(), blocks, &v.val)?;
    let y = v.val.iter().map(|&i| labels[i]).collect();
    Ok((x, y, tags.map(rows)))
}

/// Rows `idx` of the `n` train rows, pooled, in `idx`'s order: each block that holds one is read
/// once.
fn gather_rows(
    cache: &FeatureCache,
    pool: Pool,
    n: usize,
    blocks: stream::Blocks,
    idx: &[usize],
) -> Result<Array2<f32>> {
    let meta = &cache.meta;
    let width = pool.output_dim(&meta.feature_shape, &meta.layout)?;
    let mut x = Array2::<f32>::zeros((idx.len(), width));
    let mut by_block: std::collections::BTreeMap<usize, Vec<(usize, usize)>> = Default::default();
    for (k, &i) in idx.iter().enumerate() {
        by_block.entry(i / blocks.rows).or_default().push((k, i));
    }
    let mut buf = Vec::new();
    for (b, members) in by_block {
        let (start, bx) = stream::read_block(cache, pool, n, blocks, b, buf)?;
        for (k, i) in members {
            x.row_mut(k).assign(&bx.row(i - start));
        }
        buf = bx.into_raw_vec_and_offset().0;
    }
    Ok(x)
}

//! `headstart inspect`: an ONNX model's inputs and outputs, layout, preset, preprocessing, parameters,
//! multiply-adds and, with `--layers`, every node.

use headstart::error::Result;
use headstart::infer::model::{resolve_preprocess, BaseModel, ModelInfo, PreprocessOverrides};
use headstart::infer::runtime::{Device, RuntimeConfig};
use headstart::onnx::{self, edit, ModelProto};

use crate::common::{opt_size, ModelArg, RuntimeArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArg,
    /// List every node: name, op, output tensor and shape, multiply-adds.
    #[arg(long)]
    pub layers: bool,
    /// Input size WxH for models with a dynamic size (for shapes and multiply-adds).
    #[arg(long)]
    pub size: Option<String>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

pub fn run(a: &Args) -> Result<()> {
    let path = a.model.path()?;
    let proto = onnx::load(&path)?;
    let size = opt_size("--size", a.size.as_deref())?;
    let rt = RuntimeConfig {
        device: Device::Cpu,
        ..a.runtime.to_config()
    };
    let model = BaseModel::open(&path, &rt, None)?;
    let info = &model.info;
    let shapes = edit::infer_shapes(
        &proto,
        size.or(info.size).map(|(h, w)| (h as i64, w as i64)),
    );
    let opset = proto
        .opset_import
        .iter()
        .filter(|o| o.domain.is_empty())
        .map(|o| o.version)
        .max()
        .unwrap_or(0);
    println!(
        "model: {} ({:.1} MB, opset {opset}, IR {}, producer '{}')",
        path.display(),
        std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) as f64 / 1e6,
        proto.ir_version,
        proto.producer_name
    );
    println!("{}", info.describe());
    print_preset_and_preprocessing(info, size);
    let g = proto.graph.as_ref();
    let nodes = g.map_or(0, |g| g.node.len());
    let total_macs: i64 = g.map_or(0, |g| g.node.iter().map(|n| edit::macs(n, &shapes)).sum());
    let at = size
        .or(info.size)
        .map_or("the graph's input size".to_string(), |(h, w)| {
            format!("{w}x{h}")
        });
    let macs = if total_macs >= 100_000_000 {
        format!("{:.3} G", total_macs as f64 / 1e9)
    } else {
        format!("{:.3} M", total_macs as f64 / 1e6)
    };
    println!(
        "parameters: {:.2} M; multiply-adds at {at}: {macs}; {nodes} nodes",
        edit::parameter_count(&proto) as f64 / 1e6,
    );
    print_ops_and_base(&proto, &shapes);
    if !info.metadata.is_empty() {
        println!("metadata_props:");
        for (k, v) in &info.metadata {
            println!("  {k} = {v}");
        }
    }
    if a.layers {
        println!(
            "\n{:<40} {:<20} {:<52} {:>12}",
            "node", "op", "output [shape]", "mult-adds"
        );
        for (name, op, out, m) in edit::layers(&proto, &shapes) {
            println!("{name:<40} {op:<20} {out:<52} {m:>12}");
        }
    }
    Ok(())
}

fn print_preset_and_preprocessing(info: &ModelInfo, size: Option<(u32, u32)>) {
    match &info.preset {
        Some(p) => println!(
            "preset: {} (matched by {})",
            p.name,
            if info.metadata.is_empty() {
                "graph signature"
            } else {
                "metadata or graph signature"
            }
        ),
        None => println!("preset: none matched"),
    }
    match resolve_preprocess(
        info,
        &PreprocessOverrides {
            size,
            ..Default::default()
        },
    ) {
        Ok(r) => println!(
            "preprocessing: {}  [{}]",
            r.preprocess.describe(),
            r.sources.join("; ")
        ),
        Err(e) => println!("preprocessing: unknown ({e})"),
    }
}

fn print_ops_and_base(proto: &ModelProto, shapes: &edit::Shapes) {
    let mut ops: Vec<(String, usize)> = onnx::op_counts(proto).into_iter().collect();
    ops.sort_by_key(|o| std::cmp::Reverse(o.1));
    println!(
        "ops: {}",
        ops.iter()
            .map(|(o, n)| format!("{o} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let transformer = edit::last_attention(proto).is_some();
    let what = if transformer {
        "transformer base: tokens"
    } else {
        "conv base (include_top=False): tensor"
    };
    match edit::default_cut(proto) {
        Some((t, by)) => println!(
            "{what} '{t}' {} (read by {by}); `headstart cut` writes it",
            shapes.get(&t).map(|d| edit::dims_text(d)).unwrap_or_default()
        ),
        None if transformer => println!(
            "transformer base: no classifier head after the last block (already a feature extractor; extract pools a token output, --pool)"
        ),
        None => println!("conv base: no classifier head found after the last Conv (already a feature extractor)"),
    }
}

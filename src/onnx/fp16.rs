//! float16 copies of float32 models, for GPUs (`headstart convert --fp16`). Float initializers,
//! float `Constant`s and the float tensors between nodes become float16; the graph's float inputs
//! and outputs stay float32, with a `Cast` after each input and before each output, so callers feed
//! and read float32 as before. Inputs that ONNX requires in float32 whatever the data type
//! (`Resize`'s roi and scales, `Upsample`'s scales) keep their float32 initializers. Casts to
//! float32 inside the graph become casts to float16; float attributes (epsilon, alpha) stay as
//! they are, since ONNX reads them as float whatever the tensor type. Layer norms' statistics
//! (LayerNormalization, or its spelled-out ReduceMean, Pow, Sqrt and `+ eps`) and Softmax stay
//! float32 between Casts, as transformers need. Subgraphs (If, Loop, Scan) are refused: no CNN base
//! or exported head has them.

use std::collections::{HashMap, HashSet};

use half::f16;

use super::generate::{int_attr, node};
use super::proto::{data_type, GraphProto, ModelProto, NodeProto, TensorProto};

/// What [`to_fp16`] changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fp16Summary {
    /// Float initializers and Constant tensors written as float16.
    pub converted: usize,
    /// Float initializers kept in float32 (consumed where ONNX requires float32).
    pub kept_float: usize,
    /// Cast nodes added at the graph's inputs and outputs.
    pub casts: usize,
    /// Values whose float16 rounding overflowed to infinity (clamped to ±65504 instead).
    pub clamped: usize,
    /// Nodes run in float32 between Casts (norm statistics, softmax).
    pub float32_nodes: usize,
}

/// Ops that run in float32 inside the float16 graph, with Casts around them: a layer norm's
/// statistics (the op, or its spelled-out ReduceMean, Pow and Sqrt: a deviation over 256 squares
/// past float16's 65504) and attention's Softmax (its sums over a row of exponentials).
/// `Range`, too: ONNX Runtime has no float16 kernel of it (the converted model was refused).
const FLOAT32_OPS: [&str; 6] = [
    "LayerNormalization",
    "Softmax",
    "ReduceMean",
    "Pow",
    "Sqrt",
    "Range",
];

/// (op type, input index) pairs that stay float32 in a float16 graph.
fn needs_float32(op: &str, input: usize) -> bool {
    matches!((op, input), ("Resize", 1 | 2) | ("Upsample", 1))
}

/// The nodes that run in float32: every [`FLOAT32_OPS`] node, and each element-wise node whose
/// computed inputs all come from such nodes (the `+ eps` between a variance and its square root),
/// so that a float32 value is never narrowed between two of them.
fn islands(g: &GraphProto) -> HashSet<usize> {
    let constants = constant_names(g);
    let known_float = known_float(g);
    let mut producer: HashMap<&str, usize> = HashMap::new();
    let mut set = HashSet::new();
    for (k, n) in g.node.iter().enumerate() {
        let computed: Vec<&String> = n
            .input
            .iter()
            .filter(|x| !x.is_empty() && !constants.contains(x.as_str()))
            .collect();
        let follows = matches!(n.op_type.as_str(), "Add" | "Sub" | "Mul" | "Div")
            && !computed.is_empty()
            && computed
                .iter()
                .all(|x| producer.get(x.as_str()).is_some_and(|p| set.contains(p)));
        // A Range is float only with float bounds (most count int64 positions, left as they are).
        let op = n.op_type.as_str();
        let float_op = FLOAT32_OPS.contains(&op)
            && (op != "Range" || n.input.iter().any(|x| known_float.contains(x.as_str())));
        if float_op || follows {
            set.insert(k);
        }
        for o in &n.output {
            producer.insert(o, k);
        }
    }
    set
}

/// Tensors known to be float32 without type inference: float initializers and Constants, and the
/// outputs of Casts to float.
fn known_float(g: &GraphProto) -> HashSet<&str> {
    let float_const = |n: &NodeProto| {
        n.op_type == "Constant"
            && n.attribute.iter().any(|a| {
                a.t.as_ref()
                    .is_some_and(|t| t.data_type == data_type::FLOAT)
            })
    };
    let cast_to_float = |n: &NodeProto| {
        n.op_type == "Cast"
            && n.attribute
                .iter()
                .any(|a| a.name == "to" && a.i == data_type::FLOAT as i64)
    };
    g.initializer
        .iter()
        .filter(|t| t.data_type == data_type::FLOAT)
        .map(|t| t.name.as_str())
        .chain(
            g.node
                .iter()
                .filter(|n| float_const(n) || cast_to_float(n))
                .flat_map(|n| n.output.iter().map(String::as_str)),
        )
        .collect()
}

fn constant_names(g: &GraphProto) -> HashSet<String> {
    g.initializer
        .iter()
        .map(|t| t.name.clone())
        .chain(
            g.node
                .iter()
                .filter(|n| n.op_type == "Constant")
                .flat_map(|n| n.output.clone()),
        )
        .collect()
}

/// Whether input `i` of an island node of type `op` is a float tensor (a ReduceMean's axes are
/// not).
fn float_input(op: &str, i: usize) -> bool {
    !(op == "ReduceMean" && i == 1)
}

/// Runs the [`islands`] (node indices into `g.node`, before this call) in float32: a computed
/// input from outside gets a Cast to float32, one from another island node is read as the float32
/// value it is; an output read outside the islands (or a graph output) gets a Cast back to float16
/// under its own name. Initializers and Constants they read are float32 already.
fn float32_islands(
    g: &mut GraphProto,
    island: &HashSet<usize>,
    used: &mut HashSet<String>,
    s: &mut Fp16Summary,
) {
    let constants = constant_names(g);
    let outputs: HashSet<String> = g.output.iter().map(|o| o.name.clone()).collect();
    let mut outside_readers: HashSet<String> = outputs;
    for (k, n) in g.node.iter().enumerate() {
        if !island.contains(&k) {
            outside_readers.extend(n.input.iter().cloned());
        }
    }
    let mut wide: HashMap<String, String> = HashMap::new();
    let mut nodes = Vec::with_capacity(g.node.len());
    for (k, mut n) in std::mem::take(&mut g.node).into_iter().enumerate() {
        if !island.contains(&k) {
            nodes.push(n);
            continue;
        }
        let op = n.op_type.clone();
        for (i, x) in n.input.iter_mut().enumerate() {
            if x.is_empty() || constants.contains(x.as_str()) || !float_input(&op, i) {
                continue;
            }
            if let Some(w) = wide.get(x.as_str()) {
                *x = w.clone();
                continue;
            }
            let f = fresh32(x, used);
            nodes.push(cast(&format!("{f}_cast"), x, &f, data_type::FLOAT));
            wide.insert(x.clone(), f.clone());
            *x = f;
        }
        let mut after = Vec::new();
        for o in n.output.iter_mut().filter(|o| !o.is_empty()) {
            let f = fresh32(o, used);
            if outside_readers.contains(o.as_str()) {
                after.push(cast(&format!("{f}_cast"), &f, o, data_type::FLOAT16));
            }
            wide.insert(o.clone(), f.clone());
            *o = f;
        }
        nodes.push(n);
        nodes.extend(after);
        s.float32_nodes += 1;
    }
    g.node = nodes;
}

/// A name not used by any tensor of `g` for the float32 copy of `base`.
fn fresh32(base: &str, used: &mut HashSet<String>) -> String {
    fresh_as(base, "fp32", used)
}

fn to_half(v: f32, clamped: &mut usize) -> f16 {
    let h = f16::from_f32(v);
    if h.is_infinite() && v.is_finite() {
        *clamped += 1;
        if v > 0.0 {
            f16::MAX
        } else {
            f16::MIN
        }
    } else {
        h
    }
}

/// The float16 version of a float32 tensor (raw little-endian data).
fn tensor_to_fp16(t: &TensorProto, clamped: &mut usize) -> Result<TensorProto, String> {
    let values = super::edit::float_values(t)?;
    let mut raw = Vec::with_capacity(values.len() * 2);
    for v in values {
        raw.extend_from_slice(&to_half(v, clamped).to_le_bytes());
    }
    Ok(TensorProto {
        dims: t.dims.clone(),
        data_type: data_type::FLOAT16,
        name: t.name.clone(),
        doc_string: t.doc_string.clone(),
        raw_data: raw,
        ..Default::default()
    })
}

fn is_float(elem_type: i32) -> bool {
    elem_type == data_type::FLOAT
}

fn has_subgraph(n: &NodeProto) -> bool {
    n.attribute
        .iter()
        .any(|a| a.g.is_some() || !a.graphs.is_empty())
}

/// A name not used by any tensor of `g`, built from `base`.
fn fresh(base: &str, used: &mut HashSet<String>) -> String {
    fresh_as(base, "fp16", used)
}

/// `base_SUFFIX`, or `base_SUFFIX_k` for the first k not used yet.
fn fresh_as(base: &str, suffix: &str, used: &mut HashSet<String>) -> String {
    let mut name = format!("{base}_{suffix}");
    let mut k = 1;
    while used.contains(&name) {
        name = format!("{base}_{suffix}_{k}");
        k += 1;
    }
    used.insert(name.clone());
    name
}

fn cast(name: &str, input: &str, output: &str, to: i32) -> NodeProto {
    node(
        "Cast",
        name,
        &[input],
        output,
        vec![int_attr("to", to as i64)],
    )
}

/// Converts the main graph's initializers and Constant nodes, keeping float32 ones consumed where
/// ONNX requires float32 (a float16 twin is added when other nodes use the same initializer).
fn convert_constants(
    g: &mut GraphProto,
    island: &HashSet<usize>,
    used: &mut HashSet<String>,
    s: &mut Fp16Summary,
) -> Result<(), String> {
    // Which float initializers are read where float32 is required, and where float16 is.
    let mut f32_use: HashSet<String> = HashSet::new();
    let mut f16_use: HashSet<String> = HashSet::new();
    let wide = |k: usize, op: &str, i: usize| needs_float32(op, i) || island.contains(&k);
    for (k, n) in g.node.iter().enumerate() {
        for (i, x) in n.input.iter().enumerate() {
            if wide(k, &n.op_type, i) {
                f32_use.insert(x.clone());
            } else {
                f16_use.insert(x.clone());
            }
        }
    }
    let mut twins: HashMap<String, String> = HashMap::new();
    let mut added = Vec::new();
    for t in &mut g.initializer {
        if !is_float(t.data_type) {
            continue;
        }
        if !f32_use.contains(&t.name) {
            *t = tensor_to_fp16(t, &mut s.clamped)?;
            s.converted += 1;
            continue;
        }
        s.kept_float += 1;
        if f16_use.contains(&t.name) {
            let mut twin = tensor_to_fp16(t, &mut s.clamped)?;
            twin.name = fresh(&t.name, used);
            twins.insert(t.name.clone(), twin.name.clone());
            added.push(twin);
            s.converted += 1;
        }
    }
    g.initializer.extend(added);
    for (k, n) in g.node.iter_mut().enumerate() {
        let op = n.op_type.clone();
        for (i, x) in n.input.iter_mut().enumerate() {
            if let Some(t) = twins.get(x.as_str()) {
                if !wide(k, &op, i) {
                    *x = t.clone();
                }
            }
        }
        // Constants: their float tensors, unless read where float32 is required.
        if n.op_type == "Constant" || n.op_type == "ConstantOfShape" {
            let out = n.output.first().cloned().unwrap_or_default();
            if f32_use.contains(&out) {
                continue;
            }
            for a in &mut n.attribute {
                if let Some(t) = a.t.as_mut().filter(|t| is_float(t.data_type)) {
                    *t = tensor_to_fp16(t, &mut s.clamped)?;
                    s.converted += 1;
                }
            }
        }
        // Casts to float32 inside the graph now cast to float16.
        if n.op_type == "Cast" {
            for a in &mut n.attribute {
                if a.name == "to" && a.i == data_type::FLOAT as i64 {
                    a.i = data_type::FLOAT16 as i64;
                }
            }
        }
    }
    Ok(())
}

/// Writes the float16 copy of the model at `source` to `out`, recording the source's sha256
/// (`fp16_source_sha256`), so that a head trained on the float32 model's features can be used on
/// the copy's (`evaluate --any-precision`).
pub fn convert_file(source: &std::path::Path, out: &std::path::Path) -> crate::Result<Fp16Summary> {
    let proto = super::load_inlined(source)?;
    let (mut half, s) = to_fp16(&proto).map_err(|e| crate::Error::model(source, e))?;
    let sha = super::model_sha256(source)?;
    super::edit::set_metadata(&mut half, &[(super::FP16_SOURCE_SHA256, sha)]);
    super::save_edited(&half, source, out)?;
    Ok(s)
}

/// A float16 copy of `model`; see the module documentation.
pub fn to_fp16(model: &ModelProto) -> Result<(ModelProto, Fp16Summary), String> {
    convert(model, true)
}

/// [`to_fp16`], with or without the float32 islands (without: only to show what they prevent).
fn convert(model: &ModelProto, islands: bool) -> Result<(ModelProto, Fp16Summary), String> {
    let mut out = model.clone();
    let g = out.graph.as_mut().ok_or("the model has no graph")?;
    if !g.sparse_initializer.is_empty() {
        return Err("keeps weights as sparse initializers, which convert cannot carry over".into());
    }
    if g.node
        .iter()
        .any(|n| n.op_type == "QuantizeLinear" || n.op_type == "DequantizeLinear")
    {
        return Err("is an int8 (QDQ) model: its scales must stay float32; convert the float model to float16 instead".into());
    }
    if let Some(n) = g.node.iter().find(|n| has_subgraph(n)) {
        return Err(format!(
            "node '{}' ({}) holds a subgraph: float16 conversion handles flat graphs only",
            n.name, n.op_type
        ));
    }
    if g.node
        .iter()
        .any(|n| !n.domain.is_empty() && n.domain != "ai.onnx")
    {
        return Err("the model uses operators outside the standard ONNX domain".into());
    }
    let mut used: HashSet<String> = g
        .node
        .iter()
        .flat_map(|n| n.input.iter().chain(&n.output).cloned())
        .chain(g.initializer.iter().map(|t| t.name.clone()))
        .chain(g.input.iter().map(|v| v.name.clone()))
        .collect();
    let mut s = Fp16Summary::default();
    let island = if islands {
        self::islands(g)
    } else {
        HashSet::new()
    };
    convert_constants(g, &island, &mut used, &mut s)?;
    float32_islands(g, &island, &mut used, &mut s);
    let inits: HashSet<String> = g.initializer.iter().map(|t| t.name.clone()).collect();
    let elem = |v: &super::proto::ValueInfoProto| {
        v.r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .map_or(0, |t| t.elem_type)
    };
    // Float inputs: a Cast to float16 first, and every reader reads the cast.
    let mut head = Vec::new();
    let mut renamed: HashMap<String, String> = HashMap::new();
    for v in g
        .input
        .iter()
        .filter(|v| is_float(elem(v)) && !inits.contains(&v.name))
    {
        let h = fresh(&v.name, &mut used);
        head.push(cast(&format!("{h}_cast"), &v.name, &h, data_type::FLOAT16));
        renamed.insert(v.name.clone(), h);
        s.casts += 1;
    }
    // Float outputs: the producer writes a float16 tensor, a Cast gives the float32 output.
    let mut tail = Vec::new();
    for v in g.output.iter().filter(|v| is_float(elem(v))) {
        if renamed.contains_key(&v.name) || inits.contains(&v.name) {
            continue; // an input or initializer passed straight through keeps its type
        }
        let h = fresh(&v.name, &mut used);
        tail.push(cast(&format!("{h}_cast"), &h, &v.name, data_type::FLOAT));
        renamed.insert(v.name.clone(), h);
        s.casts += 1;
    }
    for n in &mut g.node {
        for x in n.input.iter_mut().chain(n.output.iter_mut()) {
            if let Some(h) = renamed.get(x.as_str()) {
                *x = h.clone();
            }
        }
    }
    let body = std::mem::take(&mut g.node);
    g.node = head.into_iter().chain(body).chain(tail).collect();
    // Intermediate type annotations: float tensors are now float16.
    for v in &mut g.value_info {
        if let Some(t) = v.r#type.as_mut().and_then(|t| t.tensor_type.as_mut()) {
            if is_float(t.elem_type) {
                t.elem_type = data_type::FLOAT16;
            }
        }
        if let Some(h) = renamed.get(&v.name) {
            v.name = h.clone();
        }
    }
    super::edit::set_metadata(&mut out, &[("headstart_precision", "fp16".into())]);
    Ok((out, s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::preprocess::Layout;
    use crate::onnx::generate::{cnn, dim, model, value_info, CnnSpec};
    use crate::onnx::proto::AttributeProto;

    fn float_tensor(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
        TensorProto {
            dims: dims.to_vec(),
            data_type: data_type::FLOAT,
            name: name.into(),
            float_data: v.to_vec(),
            ..Default::default()
        }
    }

    /// ONNX Runtime's CPU output. The CPU provider runs float16 nodes through casts it inserts, so
    /// the weights' rounding shows.
    fn run(m: &ModelProto, shape: &[usize], x: &[f32], output: &str) -> Vec<f32> {
        crate::infer::runtime::run_model_for_test(m, shape, x, output)
    }

    fn elem(v: &crate::onnx::proto::ValueInfoProto) -> i32 {
        v.r#type
            .as_ref()
            .unwrap()
            .tensor_type
            .as_ref()
            .unwrap()
            .elem_type
    }

    #[test]
    fn a_cnn_becomes_float16_inside_with_float32_at_its_edges() {
        let m = cnn(&CnnSpec::tiny(Layout::Nchw, Some((16, 16))));
        let (h, s) = to_fp16(&m).unwrap();
        let g = h.graph.as_ref().unwrap();
        let floats = m.graph.as_ref().unwrap().initializer.len();
        assert_eq!(
            (s.converted, s.kept_float, s.casts, s.clamped),
            (floats, 0, 2, 0)
        );
        assert!(g
            .initializer
            .iter()
            .all(|t| t.data_type == data_type::FLOAT16));
        assert_eq!(elem(&g.input[0]), data_type::FLOAT);
        assert_eq!(elem(&g.output[0]), data_type::FLOAT);
        let (first, last) = (&g.node[0], g.node.last().unwrap());
        assert_eq!(
            (first.op_type.as_str(), first.input[0].as_str()),
            ("Cast", g.input[0].name.as_str())
        );
        assert_eq!(first.attribute[0].i, data_type::FLOAT16 as i64);
        assert_eq!(
            (last.op_type.as_str(), last.output[0].as_str()),
            ("Cast", g.output[0].name.as_str())
        );
        assert_eq!(last.attribute[0].i, data_type::FLOAT as i64);
        assert_eq!(
            crate::onnx::metadata(&h)
                .get("headstart_precision")
                .map(String::as_str),
            Some("fp16")
        );
        // Each weight is its float16 rounding.
        let w32 =
            crate::onnx::edit::float_values(&m.graph.as_ref().unwrap().initializer[0]).unwrap();
        let raw = &g.initializer[0].raw_data;
        for (i, w) in w32.iter().enumerate() {
            let h = f16::from_le_bytes([raw[2 * i], raw[2 * i + 1]]);
            assert_eq!(h, f16::from_f32(*w));
        }
        // Same function up to float16 rounding: close, but not bit-identical.
        let x: Vec<f32> = (0..3 * 16 * 16)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 10.0)
            .collect();
        let out = g.output[0].name.clone();
        let (a, b) = (
            run(&m, &[1, 3, 16, 16], &x, &out),
            run(&h, &[1, 3, 16, 16], &x, &out),
        );
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let diff: Vec<f32> = a.iter().zip(&b).map(|(p, q)| p - q).collect();
        let rel = norm(&diff) / norm(&a);
        assert!(rel > 0.0 && rel < 5e-3, "relative error {rel}");
    }

    /// Resize's scales stay float32; a constant read both there and by a float16 node gets a
    /// float16 twin; a weight beyond float16's range is clamped and counted.
    #[test]
    fn float32_only_inputs_keep_their_type() {
        let scales = float_tensor("s", &[4], &[1.0, 1.0, 2.0, 2.0]);
        let big = float_tensor("big", &[1], &[1e6]);
        let resize = node("Resize", "r", &["x", "", "s"], "y", vec![]);
        let mul = node("Mul", "m", &["y", "s"], "z", vec![]);
        let mul2 = node("Mul", "m2", &["z", "big"], "out", vec![]);
        let d = |v: usize| dim(Some(v), "");
        let g = GraphProto {
            node: vec![resize, mul, mul2],
            name: "g".into(),
            initializer: vec![scales, big],
            input: vec![value_info("x", vec![d(1), d(1), d(2), d(2)])],
            output: vec![value_info("out", vec![d(1), d(1), d(4), d(4)])],
            ..Default::default()
        };
        let m = model(g, []);
        let (h, s) = to_fp16(&m).unwrap();
        assert_eq!(
            (s.converted, s.kept_float, s.casts, s.clamped),
            (2, 1, 2, 1)
        );
        let hg = h.graph.as_ref().unwrap();
        let by_name = |n: &str| hg.initializer.iter().find(|t| t.name == n).unwrap();
        assert_eq!(by_name("s").data_type, data_type::FLOAT);
        assert_eq!(hg.node[1].input[2], "s");
        let twin = &hg.node[2].input[1];
        assert_ne!(twin, "s");
        assert_eq!(by_name(twin).data_type, data_type::FLOAT16);
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let out = run(&h, &[1, 1, 2, 2], &x, "out");
        let want = run(&m, &[1, 1, 2, 2], &x, "out");
        // 1e6 became 65504, whatever the rest did.
        for (o, w) in out.iter().zip(&want) {
            assert!((o / w - 65504.0 / 1e6).abs() < 1e-2, "{o} vs {w}");
        }
    }

    /// A float `Range` runs in float32 between Casts: the converted model loads and computes what
    /// the float32 one does (its inputs were made float16, which ONNX Runtime refuses).
    #[test]
    fn a_float_range_stays_float32() {
        let scalar = |n: &str, v: f32| float_tensor(n, &[], &[v]);
        let range = node("Range", "r", &["start", "limit", "delta"], "seq", vec![]);
        let add = node("Add", "a", &["x", "seq"], "out", vec![]);
        let d = |v: usize| dim(Some(v), "");
        let g = GraphProto {
            node: vec![range, add],
            name: "g".into(),
            initializer: vec![
                scalar("start", 0.5),
                scalar("limit", 4.5),
                scalar("delta", 1.0),
            ],
            input: vec![value_info("x", vec![d(4)])],
            output: vec![value_info("out", vec![d(4)])],
            ..Default::default()
        };
        let m = model(g, []);
        let (h, s) = to_fp16(&m).unwrap();
        assert!(s.float32_nodes >= 1, "{s:?}");
        let x = [1.0f32, 2.0, 3.0, 4.0];
        assert_eq!(run(&h, &[4], &x, "out"), run(&m, &[4], &x, "out"));
        // An int64 Range (positions, as torch.arange exports) is left as it is: no Casts, and
        // the model still loads.
        let int = |n: &str, v: i64| crate::onnx::generate::i64_tensor(n, vec![], &[v]);
        let range = node("Range", "r", &["start", "limit", "delta"], "idx", vec![]);
        let gather = node("Gather", "g", &["x", "idx"], "out", vec![]);
        let g = GraphProto {
            node: vec![range, gather],
            name: "g".into(),
            initializer: vec![int("start", 0), int("limit", 4), int("delta", 1)],
            input: vec![value_info("x", vec![d(4)])],
            output: vec![value_info("out", vec![d(4)])],
            ..Default::default()
        };
        let m = model(g, []);
        let (h, s) = to_fp16(&m).unwrap();
        assert_eq!(s.float32_nodes, 0, "{s:?}");
        assert_eq!(run(&h, &[4], &x, "out"), run(&m, &[4], &x, "out"));
    }

    /// A ViT whose tokens deviate by thousands from their mean (as large-norm tokens do; their
    /// squares pass float16's 65504): with the norm statistics and softmax in float32 the output
    /// stays within float16's rounding of float32's, in both exporters' spellings. (ONNX Runtime
    /// fuses a spelled-out norm into its own float32-accumulating kernel where it recognises the
    /// pattern, so the graph itself is checked too.)
    #[test]
    fn norms_and_softmax_stay_float32_so_large_tokens_survive() {
        use crate::onnx::generate::vit::{vit, Style, VitSpec};
        for style in [Style::Hub, Style::Torch] {
            let mut m = vit(&VitSpec::tiny(style)).unwrap();
            let g = m.graph.as_mut().unwrap();
            let pos = g
                .initializer
                .iter_mut()
                .find(|t| t.name == "embeddings.patch_embeddings.projection.weight")
                .unwrap();
            let big: Vec<f32> = crate::onnx::edit::float_values(pos)
                .unwrap()
                .iter()
                .map(|v| v * 20_000.0)
                .collect();
            pos.raw_data = big.iter().flat_map(|v| v.to_le_bytes()).collect();
            let x: Vec<f32> = (0..3 * 32 * 32)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            let shape = [1, 3, 32, 32];
            let want = run(&m, &shape, &x, "last_hidden_state");
            let (h, s) = to_fp16(&m).unwrap();
            // Hub: per norm ReduceMean, Pow, ReduceMean, + eps, Sqrt (5 norms), and 2 softmaxes.
            let islands = if style == Style::Hub {
                5 * 5 + 2
            } else {
                5 + 2
            };
            assert_eq!(s.float32_nodes, islands, "{style:?}");
            let got = run(&h, &shape, &x, "last_hidden_state");
            let cos = crate::infer::quantize::cosine(&want, &got);
            assert!(cos > 0.999, "{style:?}: cosine {cos}");
            // Every norm statistic and softmax reads float32 values: a Cast's, another float32
            // node's (no narrowing between them), or a float32 initializer; without the islands
            // none does.
            for (conv, wide) in [(h, true), (convert(&m, false).unwrap().0, false)] {
                let g = conv.graph.as_ref().unwrap();
                let f32_inits: HashSet<&str> = g
                    .initializer
                    .iter()
                    .filter(|t| t.data_type == data_type::FLOAT)
                    .map(|t| t.name.as_str())
                    .collect();
                let reads_f32 = g
                    .node
                    .iter()
                    .filter(|n| FLOAT32_OPS.contains(&n.op_type.as_str()))
                    .flat_map(|n| {
                        n.input
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| float_input(&n.op_type, *i))
                            .map(|(_, x)| x)
                    })
                    .all(|x| x.ends_with("_fp32") || f32_inits.contains(x.as_str()));
                assert_eq!(reads_f32, wide, "{style:?}");
            }
        }
    }

    #[test]
    fn subgraphs_and_foreign_operators_are_refused() {
        let mut m = cnn(&CnnSpec::tiny(Layout::Nchw, Some((16, 16))));
        let g = m.graph.as_mut().unwrap();
        g.node[0].attribute.push(AttributeProto {
            name: "then_branch".into(),
            g: Some(Box::new(GraphProto::default())),
            ..Default::default()
        });
        let e = to_fp16(&m).unwrap_err();
        assert!(e.contains("holds a subgraph"), "{e}");
        let mut m = cnn(&CnnSpec::tiny(Layout::Nchw, Some((16, 16))));
        m.graph.as_mut().unwrap().node[0].domain = "com.example".into();
        let e = to_fp16(&m).unwrap_err();
        assert!(e.contains("outside the standard ONNX domain"), "{e}");
    }
}

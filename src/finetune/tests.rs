//! Translation tests: every supported op against ONNX Runtime on small random graphs, finite
//! differences through a translated block, and the errors for what is not supported.

use candle_core::{DType, Device, Tensor};

use super::graph::TopGraph;
use super::ops::tests::check_gradient;
use crate::onnx::generate::{dim, f32_tensor, int_attr, ints, node, value_info};
use crate::onnx::proto::*;
use crate::util::rng::Rng;

fn randv(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng(seed);
    (0..n).map(|_| (r.uniform() * 2.0 - 1.0) as f32).collect()
}

fn init(name: &str, dims: &[i64], seed: u64) -> TensorProto {
    let n: i64 = dims.iter().product();
    f32_tensor(name, dims.to_vec(), &randv(n as usize, seed))
}

fn i64_tensor(name: &str, v: &[i64]) -> TensorProto {
    TensorProto {
        dims: vec![v.len() as i64],
        data_type: data_type::INT64,
        name: name.into(),
        int64_data: v.to_vec(),
        ..Default::default()
    }
}

fn model(nodes: Vec<NodeProto>, inits: Vec<TensorProto>, out_rank: usize) -> ModelProto {
    let dims = |r: usize, p: &str| (0..r).map(|i| dim(None, &format!("{p}{i}"))).collect();
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            node: nodes,
            name: "t".into(),
            initializer: inits,
            input: vec![value_info("x", dims(4, "i"))],
            output: vec![value_info("y", dims(out_rank, "o"))],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// ONNX Runtime's output for `x` (shape `[2, 4, 6, 6]`).
fn ort_run(m: &ModelProto, x: &[f32]) -> Vec<f32> {
    crate::infer::runtime::run_model_for_test(m, &[2, 4, 6, 6], x, "y")
}

fn candle_run(m: &ModelProto, x: &[f32]) -> Vec<f32> {
    let top = TopGraph::from_model(m, "x", DType::F32).unwrap();
    let t = Tensor::from_vec(x.to_vec(), (2, 4, 6, 6), &Device::Cpu).unwrap();
    let y = top.forward(&t).unwrap();
    y.flatten_all().unwrap().to_vec1().unwrap()
}

/// Each case: the nodes from "x" to "y", their initializers and the output rank.
fn cases() -> Vec<(&'static str, Vec<NodeProto>, Vec<TensorProto>, usize)> {
    let f = |n: &str, v: f32| f32_tensor(n, vec![], &[v]);
    vec![
        (
            "conv 3x3 stride 2, asymmetric pads, bias",
            vec![node(
                "Conv",
                "c",
                &["x", "w", "b"],
                "y",
                vec![ints("pads", &[0, 0, 1, 1]), ints("strides", &[2, 2])],
            )],
            vec![init("w", &[5, 4, 3, 3], 1), init("b", &[5], 2)],
            4,
        ),
        (
            "depthwise conv 3x3",
            vec![node(
                "Conv",
                "c",
                &["x", "w", "b"],
                "y",
                vec![ints("pads", &[1, 1, 1, 1]), int_attr("group", 4)],
            )],
            vec![init("w", &[4, 1, 3, 3], 3), init("b", &[4], 4)],
            4,
        ),
        (
            "depthwise conv 5x5 stride 2, pads 1,1,2,2",
            vec![node(
                "Conv",
                "c",
                &["x", "w"],
                "y",
                vec![
                    ints("pads", &[1, 1, 2, 2]),
                    ints("strides", &[2, 2]),
                    int_attr("group", 4),
                ],
            )],
            vec![init("w", &[4, 1, 5, 5], 5)],
            4,
        ),
        (
            "grouped conv (2 groups)",
            vec![node(
                "Conv",
                "c",
                &["x", "w"],
                "y",
                vec![ints("pads", &[1, 1, 1, 1]), int_attr("group", 2)],
            )],
            vec![init("w", &[6, 2, 3, 3], 6)],
            4,
        ),
        (
            "dilated conv 3x3 (dilation 2)",
            vec![node(
                "Conv",
                "c",
                &["x", "w"],
                "y",
                vec![ints("pads", &[2, 2, 2, 2]), ints("dilations", &[2, 2])],
            )],
            vec![init("w", &[3, 4, 3, 3], 16)],
            4,
        ),
        (
            "conv 1x1, relu, clip (relu6-like)",
            vec![
                node("Conv", "c", &["x", "w"], "a", vec![]),
                node("Relu", "r", &["a"], "b", vec![]),
                node("Clip", "k", &["b", "lo", "hi"], "y", vec![]),
            ],
            vec![init("w", &[3, 4, 1, 1], 7), f("lo", 0.1), f("hi", 0.5)],
            4,
        ),
        (
            "max pool 2x2",
            vec![node(
                "MaxPool",
                "p",
                &["x"],
                "y",
                vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
            )],
            vec![],
            4,
        ),
        (
            "max pool 3x3 stride 2 (overlapping windows)",
            vec![node(
                "MaxPool",
                "p",
                &["x"],
                "y",
                vec![ints("kernel_shape", &[3, 3]), ints("strides", &[2, 2])],
            )],
            vec![],
            4,
        ),
        (
            "average pool 3x3/3",
            vec![node(
                "AveragePool",
                "p",
                &["x"],
                "y",
                vec![ints("kernel_shape", &[3, 3]), ints("strides", &[3, 3])],
            )],
            vec![],
            4,
        ),
        (
            "global average pool, flatten, gemm (transB), softmax",
            vec![
                node("GlobalAveragePool", "g", &["x"], "a", vec![]),
                node("Flatten", "f", &["a"], "b", vec![]),
                node(
                    "Gemm",
                    "m",
                    &["b", "w", "c"],
                    "d",
                    vec![int_attr("transB", 1)],
                ),
                node("Softmax", "s", &["d"], "y", vec![]),
            ],
            vec![init("w", &[3, 4], 8), init("c", &[3], 9)],
            2,
        ),
        (
            "reduce mean (no keepdims), matmul, add bias, sigmoid",
            vec![
                node(
                    "ReduceMean",
                    "r",
                    &["x"],
                    "a",
                    vec![ints("axes", &[2, 3]), int_attr("keepdims", 0)],
                ),
                node("MatMul", "m", &["a", "w"], "b", vec![]),
                node("Add", "p", &["b", "c"], "d", vec![]),
                node("Sigmoid", "s", &["d"], "y", vec![]),
            ],
            vec![init("w", &[4, 3], 10), init("c", &[3], 11)],
            2,
        ),
        (
            "batch norm, mul, sub, div, residual add, concat, reshape, transpose",
            vec![
                node(
                    "BatchNormalization",
                    "n",
                    &["x", "s", "b", "m", "v"],
                    "a",
                    vec![],
                ),
                node("Mul", "mu", &["a", "k"], "b1", vec![]),
                node("Sub", "su", &["b1", "k"], "b2", vec![]),
                node("Div", "di", &["b2", "two"], "b3", vec![]),
                node("Add", "ad", &["b3", "x"], "c", vec![]),
                node("Concat", "ca", &["c", "x"], "d", vec![int_attr("axis", 1)]),
                node(
                    "Transpose",
                    "tr",
                    &["d"],
                    "e",
                    vec![ints("perm", &[0, 2, 3, 1])],
                ),
                node("Reshape", "re", &["e", "shape"], "y", vec![]),
            ],
            vec![
                init("s", &[4], 12),
                init("b", &[4], 13),
                init("m", &[4], 14),
                f32_tensor("v", vec![4], &[0.5, 1.0, 1.5, 2.0]),
                init("k", &[1, 4, 1, 1], 15),
                f("two", 2.0),
                i64_tensor("shape", &[0, -1]),
            ],
            2,
        ),
    ]
}

/// Every trainable weight of `top` against central differences (every `step`-th value) for the
/// loss `sum(top(x) * r)`, in f64.
fn check_top_gradients(top: &TopGraph, x: &Tensor, r: &Tensor, step: usize) {
    let loss =
        |top: &TopGraph| -> Tensor { (top.forward(x).unwrap() * r).unwrap().sum_all().unwrap() };
    let grads = loss(top).backward().unwrap();
    for (name, var) in top.params() {
        check_gradient(&format!("d{name}"), var, &grads, step, |t| {
            let saved = var.as_tensor().copy().unwrap();
            var.set(t).unwrap();
            let l = loss(top).to_scalar::<f64>().unwrap();
            var.set(&saved).unwrap();
            l
        });
    }
}

#[test]
fn every_supported_op_matches_onnx_runtime() {
    let x = randv(2 * 4 * 6 * 6, 99);
    for (name, nodes, inits, rank) in cases() {
        let m = model(nodes, inits, rank);
        let (a, b) = (ort_run(&m, &x), candle_run(&m, &x));
        assert_eq!(a.len(), b.len(), "{name}: output sizes");
        let d = a
            .iter()
            .zip(&b)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-5, "{name}: max abs diff {d}");
    }
}

/// Gradients of every weight of a translated block (conv, depthwise conv, batch norm, clip, add,
/// pooling, gemm) against central differences, in f64.
#[test]
fn translated_block_gradients_match_finite_differences() {
    let m = model(
        vec![
            node(
                "Conv",
                "expand",
                &["x", "w1", "b1"],
                "a",
                vec![ints("pads", &[1, 1, 1, 1])],
            ),
            node(
                "BatchNormalization",
                "bn",
                &["a", "s", "b", "m", "v"],
                "a2",
                vec![],
            ),
            node("Clip", "relu6", &["a2", "lo", "hi"], "a3", vec![]),
            node(
                "Conv",
                "dw",
                &["a3", "w2"],
                "c",
                vec![
                    ints("pads", &[0, 0, 1, 1]),
                    ints("strides", &[2, 2]),
                    int_attr("group", 6),
                ],
            ),
            node("Conv", "project", &["c", "w3"], "d", vec![]),
            node(
                "MaxPool",
                "pool",
                &["d"],
                "e",
                vec![ints("kernel_shape", &[3, 3]), ints("strides", &[3, 3])],
            ),
            node("Flatten", "flat", &["e"], "f", vec![]),
            node(
                "Gemm",
                "fc",
                &["f", "w4", "b4"],
                "y",
                vec![int_attr("transB", 1)],
            ),
        ],
        vec![
            init("w1", &[6, 4, 3, 3], 21),
            init("b1", &[6], 22),
            init("s", &[6], 23),
            init("b", &[6], 24),
            init("m", &[6], 25),
            f32_tensor("v", vec![6], &[0.5, 1.0, 1.5, 2.0, 0.7, 0.9]),
            f32_tensor("lo", vec![], &[0.0]),
            f32_tensor("hi", vec![], &[6.0]),
            init("w2", &[6, 1, 3, 3], 26),
            init("w3", &[4, 6, 1, 1], 27),
            init("w4", &[2, 4], 28),
            init("b4", &[2], 29),
        ],
        2,
    );
    let top = TopGraph::from_model(&m, "x", DType::F64).unwrap();
    let names: Vec<&str> = top.params().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["w1", "b1", "s", "b", "w2", "w3", "w4", "b4"],
        "trainable weights"
    );
    let x = Tensor::from_vec(randv(2 * 4 * 6 * 6, 31), (2, 4, 6, 6), &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let r = Tensor::from_vec(vec![1.0f64, -0.5, 0.25, 2.0], (2, 2), &Device::Cpu).unwrap();
    check_top_gradients(&top, &x, &r, 5);
}

#[test]
fn unsupported_ops_and_bad_splits_name_the_node() {
    let m = model(
        vec![
            node("Relu", "first", &["x"], "a", vec![]),
            node("LRN", "norm1", &["a"], "y", vec![int_attr("size", 3)]),
        ],
        vec![],
        4,
    );
    let e = TopGraph::from_model(&m, "x", DType::F32).err().unwrap();
    assert!(
        e.contains("node 'norm1' (LRN)") && e.contains("not supported"),
        "{e}"
    );
    let e = TopGraph::from_model(&m, "nope", DType::F32).err().unwrap();
    assert!(e.contains("no tensor named 'nope'"), "{e}");
    // A node below the split feeding one above it: the split does not separate the graph.
    let m = model(
        vec![
            node("Relu", "r1", &["x"], "a", vec![]),
            node("Relu", "r2", &["a"], "b", vec![]),
            node("Add", "skip", &["b", "x"], "y", vec![]),
        ],
        vec![],
        4,
    );
    let e = TopGraph::from_model(&m, "a", DType::F32).err().unwrap();
    assert!(e.contains("node 'skip' (Add) also reads 'x'"), "{e}");
    let m = model(
        vec![node(
            "MaxPool",
            "p",
            &["x"],
            "y",
            vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])],
        )],
        vec![],
        4,
    );
    let e = TopGraph::from_model(&m, "x", DType::F32).err().unwrap();
    assert!(
        e.contains("node 'p' (MaxPool)") && e.contains("pads"),
        "{e}"
    );
}

/// Written-back weights are the trained values, under the same names, readable by ONNX Runtime.
#[test]
fn write_back_replaces_the_initializers() {
    let (_, nodes, inits, rank) = cases().remove(0);
    let mut m = model(nodes, inits, rank);
    let top = TopGraph::from_model(&m, "x", DType::F32).unwrap();
    for (_, v) in top.params() {
        v.set(&(v.as_tensor() * 2.0).unwrap()).unwrap();
    }
    let x = randv(2 * 4 * 6 * 6, 5);
    let want = candle_run_top(&top, &x);
    assert_eq!(top.write_back(&mut m).unwrap(), 2);
    let got = ort_run(&m, &x);
    let d = want
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(d < 1e-5, "max abs diff {d}");
}

fn candle_run_top(top: &TopGraph, x: &[f32]) -> Vec<f32> {
    let t = Tensor::from_vec(x.to_vec(), (2, 4, 6, 6), &Device::Cpu).unwrap();
    top.forward(&t)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// `--unfreeze` names resolve in Keras/tf2onnx and torchvision node names alike.
#[test]
fn preset_blocks_resolve_in_both_naming_conventions() {
    use super::{split_tensor, SplitPoint};
    let path = std::path::Path::new("m.onnx");
    for (node_name, source) in [
        ("vgg16/block5_conv1/Conv2D", "keras"),
        ("/features/features.24/Conv", "torchvision"),
    ] {
        let mut m = model(
            vec![
                node(
                    "Relu",
                    "/features/features.23/Relu",
                    &["x"],
                    "below",
                    vec![],
                ),
                node("Conv", node_name, &["below", "w"], "y", vec![]),
            ],
            vec![init("w", &[4, 4, 1, 1], 1)],
            4,
        );
        crate::onnx::edit::set_metadata(
            &mut m,
            &[("preset", "vgg16".into()), ("source", source.into())],
        );
        let t = split_tensor(&m, path, &SplitPoint::Block("block5".into())).unwrap();
        assert_eq!(t, "below", "{node_name}");
        let e = split_tensor(&m, path, &SplitPoint::Block("block9".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("block5") && e.contains("--from-layer"), "{e}");
    }
}

/// Grouped and dilated convolutions run on candle's own kernels: their gradients too.
#[test]
fn grouped_and_dilated_conv_gradients_match_finite_differences() {
    let m = model(
        vec![
            node(
                "Conv",
                "grouped",
                &["x", "w1"],
                "a",
                vec![ints("pads", &[1, 1, 1, 1]), int_attr("group", 2)],
            ),
            node(
                "Conv",
                "dilated",
                &["a", "w2", "b2"],
                "y",
                vec![ints("pads", &[2, 2, 2, 2]), ints("dilations", &[2, 2])],
            ),
        ],
        vec![
            init("w1", &[6, 2, 3, 3], 41),
            init("w2", &[2, 6, 3, 3], 42),
            init("b2", &[2], 43),
        ],
        4,
    );
    let top = TopGraph::from_model(&m, "x", DType::F64).unwrap();
    let x = Tensor::from_vec(randv(2 * 4 * 6 * 6, 44), (2, 4, 6, 6), &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let r = Tensor::from_vec(randv(2 * 2 * 6 * 6, 45), (2, 2, 6, 6), &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    check_top_gradients(&top, &x, &r, 3);
}

/// The top block of a torch-layout ViT (layer norms, Q/K/V MatMuls, reshapes to heads, softmax
/// attention, an Erf GELU, LayerScale, residual Adds, the final norm) translated from the tensor
/// between the blocks: the same tokens as ONNX Runtime, and every weight's gradient (MatMul
/// kernels, biases, norm scales and shifts, LayerScale) as central differences give it, in f64.
/// The hub layout's reshapes computed through Shape are refused, naming the op.
#[test]
fn a_vit_block_matches_onnx_runtime_and_finite_differences() {
    use crate::onnx::generate::vit::{vit, Style, VitSpec};
    let spec = VitSpec::tiny(Style::Torch);
    let m = vit(&spec).unwrap();
    let split = "/encoder.layer.0/Add_1_output_0".to_string();
    let x = randv(2 * 3 * 32 * 32, 41);
    let with = crate::onnx::qdq::with_outputs(&m, std::slice::from_ref(&split));
    let run =
        |out: &str| crate::infer::runtime::run_model_for_test(&with, &[2, 3, 32, 32], &x, out);
    let (mid, want) = (run(&split), run("last_hidden_state"));
    let top = TopGraph::from_model(&m, &split, DType::F32).unwrap();
    let t = Tensor::from_vec(mid.clone(), (2, spec.tokens(), spec.dim), &Device::Cpu).unwrap();
    let got = top
        .forward(&t)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let d = want
        .iter()
        .zip(&got)
        .map(|(p, q)| (p - q).abs())
        .fold(0f32, f32::max);
    assert!(d < 1e-4, "max abs diff {d}");
    let names: Vec<&str> = top.params().iter().map(|(n, _)| n.as_str()).collect();
    for w in [
        "encoder.layer.1.norm1.weight",
        "encoder.layer.1.attention.attention.query.weight",
        "encoder.layer.1.attention.attention.query.bias",
        "encoder.layer.1.layer_scale1.lambda1",
        "encoder.layer.1.mlp.fc1.weight",
        "layernorm.bias",
    ] {
        assert!(names.contains(&w), "{w} not trainable: {names:?}");
    }

    let top = TopGraph::from_model(&m, &split, DType::F64).unwrap();
    let t = t.to_dtype(DType::F64).unwrap();
    let r = Tensor::from_vec(
        randv(2 * spec.tokens() * spec.dim, 43),
        (2, spec.tokens(), spec.dim),
        &Device::Cpu,
    )
    .unwrap()
    .to_dtype(DType::F64)
    .unwrap();
    check_top_gradients(&top, &t, &r, 3);

    let hub = vit(&VitSpec::tiny(Style::Hub)).unwrap();
    let e = TopGraph::from_model(&hub, &split, DType::F32)
        .err()
        .unwrap();
    assert!(e.contains("(Shape)") && e.contains("not supported"), "{e}");
}

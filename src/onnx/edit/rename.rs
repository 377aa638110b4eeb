//! Renaming a graph's tensors and nodes, through its subgraphs (the bodies of If, Loop and Scan
//! read the outer graph's tensors by name): what `export` does to a base whose names would clash
//! with the ones it adds (an input called `image`, an output called `probabilities`, an earlier
//! export's `headstart/...` nodes).

use std::collections::{HashMap, HashSet};

use crate::onnx::proto::{GraphProto, NodeProto};

/// Every tensor and node name of `g` and its subgraphs.
pub fn names(g: &GraphProto) -> HashSet<String> {
    let mut out = HashSet::new();
    collect(g, &mut out);
    out
}

fn collect(g: &GraphProto, out: &mut HashSet<String>) {
    let values = g.input.iter().chain(&g.output).chain(&g.value_info);
    out.extend(values.map(|v| v.name.clone()));
    out.extend(g.initializer.iter().map(|t| t.name.clone()));
    for n in &g.node {
        out.insert(n.name.clone());
        out.extend(n.input.iter().chain(&n.output).cloned());
        for_subgraphs(n, |sub| collect(sub, out));
    }
    out.remove("");
}

fn for_subgraphs(n: &NodeProto, mut f: impl FnMut(&GraphProto)) {
    for a in &n.attribute {
        a.g.iter().for_each(|g| f(g));
        a.graphs.iter().for_each(&mut f);
    }
}

/// The names of `g` that `clashes` says clash, each mapped to `base/<name>` (more `base/` until it
/// is free); empty when none does.
pub fn clear_of(g: &GraphProto, clashes: impl Fn(&str) -> bool) -> HashMap<String, String> {
    let taken = names(g);
    let mut map = HashMap::new();
    let mut sorted: Vec<&String> = taken.iter().filter(|n| clashes(n)).collect();
    sorted.sort();
    for name in sorted {
        let mut new = format!("base/{name}");
        while taken.contains(&new) || clashes(&new) || map.values().any(|v| v == &new) {
            new = format!("base/{new}");
        }
        map.insert(name.clone(), new);
    }
    map
}

/// Renames, by `map`, every tensor and node name of `g` and its subgraphs.
pub fn rename(g: &mut GraphProto, map: &HashMap<String, String>) {
    if map.is_empty() {
        return;
    }
    let swap = |s: &mut String| {
        if let Some(new) = map.get(s.as_str()) {
            *s = new.clone();
        }
    };
    for v in g
        .input
        .iter_mut()
        .chain(&mut g.output)
        .chain(&mut g.value_info)
    {
        swap(&mut v.name);
    }
    for t in &mut g.initializer {
        swap(&mut t.name);
    }
    for n in &mut g.node {
        swap(&mut n.name);
        n.input.iter_mut().chain(&mut n.output).for_each(swap);
        for a in &mut n.attribute {
            if let Some(sub) = a.g.as_mut() {
                rename(sub, map);
            }
            for sub in &mut a.graphs {
                rename(sub, map);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::proto::{AttributeProto, ValueInfoProto};

    fn node(name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            name: name.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn clashing_names_move_under_base_everywhere_a_subgraph_included() {
        let value = |n: &str| ValueInfoProto {
            name: n.into(),
            ..Default::default()
        };
        let body = GraphProto {
            node: vec![node("inner", &["image"], &["y"])],
            output: vec![value("y")],
            ..Default::default()
        };
        let mut iff = node("headstart/if", &["cond"], &["probabilities"]);
        iff.attribute.push(AttributeProto {
            name: "then_branch".into(),
            g: Some(Box::new(body)),
            ..Default::default()
        });
        let mut g = GraphProto {
            input: vec![value("image"), value("cond")],
            output: vec![value("probabilities")],
            node: vec![iff],
            ..Default::default()
        };
        let reserved =
            |n: &str| n == "image" || n == "probabilities" || n.starts_with("headstart/");
        let map = clear_of(&g, reserved);
        assert_eq!(map.len(), 3, "{map:?}");
        rename(&mut g, &map);
        let after = names(&g);
        assert!(!after.iter().any(|n| reserved(n)), "{after:?}");
        assert_eq!(g.input[0].name, "base/image");
        let inner = g.node[0].attribute[0].g.as_ref().unwrap();
        assert_eq!(inner.node[0].input, ["base/image"]);
        assert_eq!(g.node[0].name, "base/headstart/if");
        assert_eq!(g.output[0].name, "base/probabilities");
    }
}

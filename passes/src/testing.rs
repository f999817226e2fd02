//! Test helpers shared by the passes' tests: graphs from s-expressions, and a differential
//! check that runs two graphs on the same random inputs.

use crate::egraph::analysis::{to_ir, Data};
use crate::egraph::lang::{self, Spark};
use egg::{Id, Language, RecExpr};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sparkc_cpu::{Array, Executor, Value};
use sparkc_ir::{DType, Dim, Graph, Tensor, TensorType, ValueRef, ValueType};
use std::collections::HashMap;

/// Named inputs of a test expression, with their types.
pub type Inputs = &'static [(&'static str, &'static str)];

/// The input most tests use: `x: f32[N,4]`.
pub const X: (&str, &str) = ("x", "f32[N,4]");

/// Parses `f32[N,4]`.
pub fn tensor_type(text: &str) -> ValueType {
    let (dtype, dims) = text.split_once('[').expect("a type like f32[N,4]");
    let dtype = match dtype {
        "f32" => DType::F32,
        "i64" => DType::I64,
        "i32" => DType::I32,
        other => panic!("test types are f32, i64 or i32, found {other}"),
    };
    let dims = dims
        .trim_end_matches(']')
        .split(',')
        .filter(|d| !d.is_empty())
        .map(|d| d.parse().map_or_else(|_| Dim::sym(d), Dim::known))
        .collect();
    ValueType::Tensor(TensorType::new(dtype, dims))
}

/// Builds a graph computing `expr`, whose leaves are the named `inputs`, numbers (f32
/// scalars), `i:0,-1` (an i64 vector), or attribute leaves (`p:...`, `t:..`, `none`). Equal
/// subexpressions are one node, as after CSE.
pub fn graph_of(expr: &str, inputs: &[(&str, &str)]) -> Graph {
    let expr: RecExpr<Spark> = expr.parse().expect("test expression parses");
    let mut graph = Graph::new("test");
    let mut values: Vec<Option<ValueRef>> = Vec::new();
    let mut data: Vec<Data> = Vec::new();
    let mut seen: HashMap<Spark, usize> = HashMap::new();
    let mut canonical: Vec<usize> = Vec::new();
    for (k, node) in expr.as_ref().iter().enumerate() {
        let node = &node
            .clone()
            .map_children(|c| Id::from(canonical[usize::from(c)]));
        if let Some(&first) = seen.get(node) {
            canonical.push(first);
            values.push(values[first]);
            data.push(data[first].clone());
            continue;
        }
        seen.insert(node.clone(), k);
        canonical.push(k);
        let (value, d) = match node {
            Spark::Opaque(symbol, children) if children.is_empty() => {
                let s = symbol.as_str();
                if let Some((_, ty)) = inputs.iter().find(|(n, _)| *n == s) {
                    (Some(graph.add_input(s, tensor_type(ty))), Data::default())
                } else if let Ok(x) = s.parse::<f64>() {
                    let t = Tensor::from_f64s(DType::F32, vec![], &[x]).expect("scalar");
                    let d = Data {
                        scalar: Some(x),
                        ..Data::default()
                    };
                    (Some(graph.add_const(&format!("c{k}"), t)), d)
                } else if let Some(ints) = s.strip_prefix("i:") {
                    let v: Vec<i64> = ints.split(',').map(|i| i.parse().expect("int")).collect();
                    let t = Tensor::from_i64s(vec![v.len()], &v).expect("ints");
                    (Some(graph.add_const(&format!("c{k}"), t)), Data::default())
                } else {
                    let d = Data {
                        leaf: Some(*symbol),
                        ..Data::default()
                    };
                    (None, d)
                }
            }
            node => {
                let table = lang::OpTable::default();
                let lookup = |id: Id| data[usize::from(id)].clone();
                let (op, args) = to_ir(&table, node, &lookup).expect("a vocabulary op");
                let refs: Vec<Option<ValueRef>> = args
                    .iter()
                    .map(|a| a.and_then(|id| values[usize::from(id)]))
                    .collect();
                let out = sparkc_ir::Value {
                    name: format!("v{k}"),
                    ty: tensor_type("f32[]"),
                    known: None,
                };
                let id = graph.add_node(format!("n{k}"), op, &refs, vec![out]);
                (
                    Some(ValueRef {
                        node: id,
                        output: 0,
                    }),
                    Data::default(),
                )
            }
        };
        values.push(value);
        data.push(d);
    }
    graph.outputs.push(
        values
            .last()
            .copied()
            .flatten()
            .expect("a value at the root"),
    );
    sparkc_ir::infer_graph(&mut graph).expect("the test graph is well typed");
    graph
}

/// Random inputs for `graph`, with every symbolic dim drawn from 1..=4.
pub fn random_inputs(graph: &Graph, rng: &mut StdRng) -> Vec<Value> {
    let mut dims: HashMap<String, usize> = HashMap::new();
    graph
        .inputs
        .iter()
        .map(|&id| {
            let t = graph.node(id).outputs[0]
                .ty
                .as_tensor()
                .expect("tensor input");
            let shape: Vec<usize> = t
                .shape
                .as_ref()
                .expect("ranked")
                .iter()
                .map(|d| match d.as_const() {
                    Some(n) => n as usize,
                    None => *dims
                        .entry(d.to_string())
                        .or_insert_with(|| rng.random_range(1..=4)),
                })
                .collect();
            let n = shape.iter().product();
            // 8-bit codes over their whole range, wider integers in [-4, 4), everything else
            // as f32 in [-2, 2).
            let data = match t.dtype {
                DType::U8 => sparkc_cpu::Data::U8((0..n).map(|_| rng.random()).collect()),
                DType::I8 => sparkc_cpu::Data::I8((0..n).map(|_| rng.random()).collect()),
                DType::I32 => {
                    sparkc_cpu::Data::I32((0..n).map(|_| rng.random_range(-4..4)).collect())
                }
                DType::I64 => {
                    sparkc_cpu::Data::I64((0..n).map(|_| rng.random_range(-4..4)).collect())
                }
                _ => {
                    sparkc_cpu::Data::F32((0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect())
                }
            };
            Value::Tensor(Array::new(shape, data))
        })
        .collect()
}

/// Runs both graphs on the same random inputs, `trials` times; `Err` describes a mismatch.
pub fn differential(before: &Graph, after: &Graph, trials: usize) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(7);
    let (a, b) = (
        Executor::new(before).map_err(|e| e.to_string())?,
        Executor::new(after).map_err(|e| e.to_string())?,
    );
    for trial in 0..trials {
        let inputs = random_inputs(before, &mut rng);
        let x = a.run(inputs.clone()).map_err(|e| e.to_string())?;
        let y = b.run(inputs).map_err(|e| e.to_string())?;
        for (p, q) in x.iter().zip(&y) {
            let (p, q) = (
                p.as_tensor().map_err(|e| e.to_string())?,
                q.as_tensor().map_err(|e| e.to_string())?,
            );
            if p.shape != q.shape {
                return Err(format!(
                    "trial {trial}: shapes {:?} and {:?}",
                    p.shape, q.shape
                ));
            }
            for (u, v) in p.data.to_f64s().iter().zip(q.data.to_f64s()) {
                let same = (u.is_nan() && v.is_nan()) || (u - v).abs() <= 1e-5 + 1e-4 * v.abs();
                if !same {
                    return Err(format!("trial {trial}: {u} before, {v} after"));
                }
            }
        }
    }
    Ok(())
}

/// Adds a node computing `op` on `inputs`, typed by inference, and returns its value.
pub fn push(graph: &mut Graph, op: sparkc_ir::Op, inputs: &[Option<ValueRef>]) -> ValueRef {
    let n = graph.node_count();
    let value = sparkc_ir::Value {
        name: format!("p{n}"),
        ty: tensor_type("f32[]"),
        known: None,
    };
    let id = graph.add_node(format!("p{n}"), op, inputs, vec![value]);
    sparkc_ir::infer_graph(graph).expect("well typed");
    ValueRef {
        node: id,
        output: 0,
    }
}

/// Node count per op name, inputs and constants left out.
pub fn ops(graph: &Graph) -> Vec<String> {
    let mut names: Vec<String> = graph
        .dag
        .node_weights()
        .filter(|n| !matches!(n.op, sparkc_ir::Op::Input | sparkc_ir::Op::Const(_)))
        .map(|n| match &n.op {
            sparkc_ir::Op::Fused(f) => format!("Fused({})", f.label()),
            op => op.name(),
        })
        .collect();
    names.sort();
    names
}

/// Runs `pass` on a copy of `graph`, verifies the result and checks it computes the same.
pub fn run_checked(pass: &mut dyn crate::Pass, graph: &Graph) -> Graph {
    let mut after = graph.clone();
    pass.run(&mut after).expect("the pass runs");
    sparkc_ir::verify(&after).expect("the result verifies");
    differential(graph, &after, 4).expect("the pass keeps the results");
    after
}

impl crate::dce::DeadCode {
    /// Runs dead-code elimination, for tests that check what a pass left reachable.
    pub fn run_on(&mut self, graph: &mut Graph) {
        crate::Pass::run(self, graph).expect("dce runs");
    }
}

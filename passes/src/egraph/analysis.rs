//! The analysis: each e-class's types (dtype and shape of every output), whether it is a
//! constant, and its value when it is a scalar constant.
//!
//! Types come from the IR's own inference run on the e-node's op, so an e-class has exactly the
//! type the IR would give the value, and a rewrite can be checked against it before it applies.

use super::lang::{self, Entry, OpTable, Spark};
use egg::{Analysis, DidMerge, EGraph, Id, Language, Symbol};
use sparkc_ir::graph::const_value;
use sparkc_ir::op::{AttentionAttrs, Binary, GeluApproximation, Reduction, Unary};
use sparkc_ir::{infer_op, DType, Op, Value};

/// What the analysis knows of one e-class.
#[derive(Clone, Debug, Default)]
pub struct Data {
    /// Typed outputs (one for most ops; empty for attribute leaves and ill-typed nodes).
    pub outputs: Vec<Value>,
    /// The symbol of an attribute leaf.
    pub leaf: Option<Symbol>,
    /// True when the value is a constant (or computed from constants only).
    pub constant: bool,
    /// The value, when the class is a constant with a single element.
    pub scalar: Option<f64>,
}

impl Data {
    /// The tensor type of the single output, when the class has one.
    pub fn value(&self) -> Option<&Value> {
        match self.outputs.as_slice() {
            [v] => Some(v),
            _ => None,
        }
    }
}

/// One application of a rule.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The e-class it added to.
    pub class: Id,
    /// The head of the e-node it added (`Gemm`, `LayerNormalization`, ...).
    pub head: String,
    /// The rule.
    pub rule: String,
    /// False for rules that only reorder operands, which explanations leave out.
    pub builds: bool,
}

/// The analysis state: the opaque op table and the rules applied so far, for provenance.
#[derive(Debug, Default)]
pub struct Types {
    /// Opaque symbols.
    pub table: OpTable,
    /// The classes of the graph outputs (read outside the graph).
    pub outputs: Vec<Id>,
    /// Every rewrite applied, for explanations.
    pub applied: Vec<Applied>,
}

/// The IR op an e-node stands for, and which children are its IR inputs (by position; `None`
/// for an omitted optional input). `None` when the node is a leaf or projection, or its
/// attribute children are not what the op needs.
pub fn to_ir(
    table: &OpTable,
    node: &Spark,
    data: &dyn Fn(Id) -> Data,
) -> Option<(Op, Vec<Option<Id>>)> {
    let c = node.children();
    let all = || c.iter().map(|&id| Some(id)).collect::<Vec<_>>();
    let scalar = |id: Id| data(id).scalar;
    let leaf = |id: Id| data(id).leaf;
    let unary = |u: Unary| Some((Op::Unary(u), all()));
    let binary = |b: Binary| Some((Op::Binary(b), all()));
    match node {
        Spark::Add(_) => binary(Binary::Add),
        Spark::Sub(_) => binary(Binary::Sub),
        Spark::Mul(_) => binary(Binary::Mul),
        Spark::Div(_) => binary(Binary::Div),
        Spark::Pow(_) => binary(Binary::Pow),
        Spark::Neg(_) => unary(Unary::Neg),
        Spark::Sqrt(_) => unary(Unary::Sqrt),
        Spark::Reciprocal(_) => unary(Unary::Reciprocal),
        Spark::Exp(_) => unary(Unary::Exp),
        Spark::Erf(_) => unary(Unary::Erf),
        Spark::Tanh(_) => unary(Unary::Tanh),
        Spark::Sigmoid(_) => unary(Unary::Sigmoid),
        Spark::Relu(_) => unary(Unary::Relu),
        Spark::Gelu(_) => unary(Unary::Gelu {
            approximate: GeluApproximation::None,
        }),
        Spark::GeluTanh(_) => unary(Unary::Gelu {
            approximate: GeluApproximation::Tanh,
        }),
        Spark::Silu(_) => unary(Unary::Swish { alpha: 1.0 }),
        Spark::MatMul(_) => Some((Op::MatMul, all())),
        Spark::TransposedMatMul([a, b, t]) => {
            let (trans_a, trans_b) = lang::parse_trans(leaf(*t)?)?;
            Some((
                Op::TransposedMatMul { trans_a, trans_b },
                vec![Some(*a), Some(*b)],
            ))
        }
        Spark::Gemm(_) => Some((
            Op::Gemm {
                alpha: 1.0,
                beta: 1.0,
                trans_a: false,
                trans_b: false,
            },
            all(),
        )),
        Spark::Transpose([x, p]) => Some((
            Op::Transpose {
                perm: lang::parse_perm(leaf(*p)?)?,
            },
            vec![Some(*x)],
        )),
        Spark::Reshape(_) => Some((Op::Reshape { allowzero: false }, all())),
        Spark::Softmax(_) => Some((Op::Softmax { axis: -1 }, all())),
        Spark::ReduceMean(_) | Spark::ReduceSum(_) | Spark::ReduceMax(_) => Some((
            Op::Reduce {
                kind: match node {
                    Spark::ReduceMean(_) => Reduction::Mean,
                    Spark::ReduceSum(_) => Reduction::Sum,
                    _ => Reduction::Max,
                },
                keepdims: true,
                noop_with_empty_axes: false,
            },
            all(),
        )),
        Spark::LayerNorm([x, g, b, eps]) => Some((
            Op::LayerNormalization {
                axis: -1,
                epsilon: scalar(*eps)? as f32,
                stash_type: DType::F32,
            },
            vec![Some(*x), Some(*g), Some(*b)],
        )),
        Spark::RmsNorm([x, g, eps]) => Some((
            Op::RmsNormalization {
                axis: -1,
                epsilon: scalar(*eps)? as f32,
                stash_type: DType::F32,
            },
            vec![Some(*x), Some(*g)],
        )),
        Spark::Attention([q, k, v, mask, scale, heads]) => {
            let heads = lang::parse_heads(leaf(*heads)?)?;
            let mask = match leaf(*mask) {
                Some(s) if s.as_str() == lang::NONE => None,
                _ => Some(*mask),
            };
            Some((
                Op::Attention(AttentionAttrs {
                    is_causal: false,
                    kv_num_heads: heads,
                    q_num_heads: heads,
                    qk_matmul_output_mode: 0,
                    scale: Some(scalar(*scale)? as f32),
                    softcap: 0.0,
                    softmax_precision: None,
                    left_window_size: -1,
                    right_window_size: -1,
                }),
                vec![Some(*q), Some(*k), Some(*v), mask],
            ))
        }
        Spark::Opaque(symbol, children) => match table.get(*symbol)? {
            Entry::Op(op, _) => Some((
                op.clone(),
                children
                    .iter()
                    .map(|&id| match leaf(id) {
                        Some(s) if s.as_str() == lang::NONE => None,
                        _ => Some(id),
                    })
                    .collect(),
            )),
            Entry::Input(..) | Entry::Const(_) => None,
        },
    }
}

/// The analysis data of an e-node, from its children's.
pub fn make_data(table: &OpTable, node: &Spark, data: &dyn Fn(Id) -> Data) -> Data {
    if let Spark::Opaque(symbol, children) = node {
        if let Some(i) = lang::output_index(*symbol).filter(|_| children.len() == 1) {
            let tuple = data(children[0]);
            return Data {
                outputs: tuple.outputs.get(i).cloned().into_iter().collect(),
                constant: tuple.constant,
                ..Data::default()
            };
        }
        match table.get(*symbol) {
            Some(Entry::Const(tensor)) => {
                let value = const_value(symbol.as_str(), tensor);
                let scalar = (tensor.len() == 1)
                    .then(|| tensor.to_f64s().and_then(|v| v.first().copied()))
                    .flatten();
                return Data {
                    outputs: vec![value],
                    constant: true,
                    scalar,
                    leaf: None,
                };
            }
            Some(Entry::Input(_, value)) => {
                return Data {
                    outputs: vec![value.clone()],
                    ..Data::default()
                }
            }
            _ if children.is_empty() && table.get(*symbol).is_none() => {
                return Data {
                    leaf: Some(*symbol),
                    ..Data::default()
                };
            }
            _ => {}
        }
    }
    let Some((op, inputs)) = to_ir(table, node, data) else {
        return Data::default();
    };
    let values: Vec<Option<Value>> = inputs
        .iter()
        .map(|i| i.and_then(|id| data(id).value().cloned()))
        .collect();
    if values
        .iter()
        .zip(&inputs)
        .any(|(v, i)| v.is_none() && i.is_some())
    {
        return Data::default();
    }
    let outputs = match node {
        Spark::Opaque(symbol, _) => match table.get(*symbol) {
            Some(Entry::Op(_, n)) => *n,
            _ => 1,
        },
        _ => 1,
    };
    let placeholders = (0..outputs)
        .map(|i| Value {
            name: format!("v{i}"),
            ty: sparkc_ir::ValueType::Tensor(sparkc_ir::TensorType {
                dtype: DType::F32,
                shape: None,
            }),
            known: None,
        })
        .collect();
    match infer_op("egraph", &op, &values, placeholders) {
        Ok(inferred) => Data {
            outputs: inferred
                .into_iter()
                .take(outputs)
                .enumerate()
                .map(|(i, inf)| Value {
                    name: format!("v{i}"),
                    ty: inf.ty,
                    known: inf.known,
                })
                .collect(),
            constant: inputs.iter().flatten().all(|&id| data(id).constant) && !inputs.is_empty(),
            ..Data::default()
        },
        Err(_) => Data::default(),
    }
}

impl Analysis<Spark> for Types {
    type Data = Data;

    fn make(egraph: &mut EGraph<Spark, Self>, enode: &Spark) -> Data {
        let lookup = |id: Id| egraph[id].data.clone();
        make_data(&egraph.analysis.table, enode, &lookup)
    }

    fn merge(&mut self, to: &mut Data, from: Data) -> DidMerge {
        let mut changed = false;
        if to.outputs.is_empty() && !from.outputs.is_empty() {
            to.outputs = from.outputs.clone();
            changed = true;
        }
        if to.scalar.is_none() && from.scalar.is_some() {
            to.scalar = from.scalar;
            changed = true;
        }
        if !to.constant && from.constant {
            to.constant = true;
            changed = true;
        }
        if to.leaf.is_none() && from.leaf.is_some() {
            to.leaf = from.leaf;
            changed = true;
        }
        DidMerge(changed, true)
    }
}

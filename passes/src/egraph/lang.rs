//! The e-graph language: the IR ops the rules reason about, one variant each, and an opaque
//! variant for every other op.
//!
//! Attributes the rules need are children: leaf symbols such as `p:0,2,1,3` (a permutation),
//! `t:10` (which operands a product reads transposed), `h:4` (attention heads of 3-D operands)
//! and `none` (an omitted optional input).
//! Numbers such as an epsilon are ordinary e-classes carrying a constant scalar. Every other op
//! is `op<k>`, an index into the [`OpTable`], so two ops with equal attributes share a symbol
//! and hash-consing merges equal computations.

use egg::{define_language, Id, Symbol};
use sparkc_ir::op::{Binary, GeluApproximation, Reduction, Unary};
use sparkc_ir::{Op, Tensor};
use std::collections::HashMap;

define_language! {
    /// One e-node: an op and its children.
    pub enum Spark {
        "Add" = Add([Id; 2]),
        "Sub" = Sub([Id; 2]),
        "Mul" = Mul([Id; 2]),
        "Div" = Div([Id; 2]),
        "Pow" = Pow([Id; 2]),
        "Neg" = Neg([Id; 1]),
        "Sqrt" = Sqrt([Id; 1]),
        "Reciprocal" = Reciprocal([Id; 1]),
        "Exp" = Exp([Id; 1]),
        "Erf" = Erf([Id; 1]),
        "Tanh" = Tanh([Id; 1]),
        "Sigmoid" = Sigmoid([Id; 1]),
        "Relu" = Relu([Id; 1]),
        "Gelu" = Gelu([Id; 1]),
        "GeluTanh" = GeluTanh([Id; 1]),
        "Silu" = Silu([Id; 1]),
        "MatMul" = MatMul([Id; 2]),
        "TransposedMatMul" = TransposedMatMul([Id; 3]),
        "Gemm" = Gemm([Id; 3]),
        "Transpose" = Transpose([Id; 2]),
        "Reshape" = Reshape([Id; 2]),
        "Softmax" = Softmax([Id; 1]),
        "ReduceMean" = ReduceMean([Id; 2]),
        "ReduceSum" = ReduceSum([Id; 2]),
        "ReduceMax" = ReduceMax([Id; 2]),
        "LayerNormalization" = LayerNorm([Id; 4]),
        "RmsNormalization" = RmsNorm([Id; 3]),
        "Attention" = Attention([Id; 6]),
        Opaque(Symbol, Vec<Id>),
    }
}

/// The leaf marking an omitted optional input.
pub const NONE: &str = "none";

/// What an opaque symbol stands for.
#[derive(Clone, Debug)]
pub enum Entry {
    /// A graph input: its position in the graph's inputs and its value.
    Input(usize, sparkc_ir::Value),
    /// A constant.
    Const(Tensor),
    /// Any other op, with its number of outputs.
    Op(Op, usize),
}

/// The opaque symbols of one e-graph: inputs, constants and ops outside the rule vocabulary.
#[derive(Debug, Default)]
pub struct OpTable {
    entries: HashMap<Symbol, Entry>,
    by_key: HashMap<String, Symbol>,
}

impl OpTable {
    /// What `symbol` stands for, if it is one of this table's.
    pub fn get(&self, symbol: Symbol) -> Option<&Entry> {
        self.entries.get(&symbol)
    }

    /// The symbol of graph input `i`.
    pub fn input(&mut self, i: usize, value: sparkc_ir::Value) -> Symbol {
        let symbol = Symbol::from(format!("in{i}"));
        self.entries.insert(symbol, Entry::Input(i, value));
        symbol
    }

    /// A fresh symbol for a constant.
    pub fn constant(&mut self, tensor: Tensor) -> Symbol {
        let symbol = Symbol::from(format!("c{}", self.entries.len()));
        self.entries.insert(symbol, Entry::Const(tensor));
        symbol
    }

    /// A symbol of its own for an op that must not merge with an equal one (random draws).
    pub fn unique_op(&mut self, op: &Op, outputs: usize) -> Symbol {
        let symbol = Symbol::from(format!("op{}", self.entries.len()));
        self.entries.insert(symbol, Entry::Op(op.clone(), outputs));
        symbol
    }

    /// The symbol of a scalar constant made by a rule; equal scalars share one.
    pub fn scalar(&mut self, tensor: Tensor) -> Symbol {
        let key = format!("scalar {} {:?}", tensor.dtype, &tensor.data[..]);
        if let Some(&symbol) = self.by_key.get(&key) {
            return symbol;
        }
        let symbol = self.constant(tensor);
        self.by_key.insert(key, symbol);
        symbol
    }

    /// The symbol of an opaque op: equal ops (same attributes) share one.
    pub fn op(&mut self, op: &Op, outputs: usize) -> Symbol {
        let key = format!("{outputs}:{op:?}");
        if let Some(&symbol) = self.by_key.get(&key) {
            return symbol;
        }
        let symbol = Symbol::from(format!("op{}", self.entries.len()));
        self.entries.insert(symbol, Entry::Op(op.clone(), outputs));
        self.by_key.insert(key, symbol);
        symbol
    }
}

/// The symbol projecting output `i` of a multi-output op.
pub fn output_symbol(i: usize) -> Symbol {
    Symbol::from(format!("get{i}"))
}

/// The output a projection symbol selects.
pub fn output_index(symbol: Symbol) -> Option<usize> {
    symbol.as_str().strip_prefix("get")?.parse().ok()
}

/// The permutation leaf `p:0,2,1,3`.
pub fn perm_symbol(perm: &[i64]) -> Symbol {
    let items: Vec<String> = perm.iter().map(i64::to_string).collect();
    Symbol::from(format!("p:{}", items.join(",")))
}

/// The permutation a leaf names.
pub fn parse_perm(symbol: Symbol) -> Option<Vec<i64>> {
    let body = symbol.as_str().strip_prefix("p:")?;
    if body.is_empty() {
        return Some(Vec::new());
    }
    body.split(',').map(|s| s.parse().ok()).collect()
}

/// The leaf `t:AB` saying which operands of a product are read transposed.
pub fn trans_symbol(a: bool, b: bool) -> Symbol {
    Symbol::from(format!("t:{}{}", a as u8, b as u8))
}

/// The flags of a `t:AB` leaf.
pub fn parse_trans(symbol: Symbol) -> Option<(bool, bool)> {
    match symbol.as_str().strip_prefix("t:")? {
        "00" => Some((false, false)),
        "01" => Some((false, true)),
        "10" => Some((true, false)),
        "11" => Some((true, true)),
        _ => None,
    }
}

/// The leaf `h:N`: attention over 3-D operands holding `N` heads (`h:0` for 4-D operands).
pub fn heads_symbol(heads: i64) -> Symbol {
    Symbol::from(format!("h:{heads}"))
}

/// The head count of an `h:N` leaf.
pub fn parse_heads(symbol: Symbol) -> Option<i64> {
    symbol.as_str().strip_prefix("h:")?.parse().ok()
}

/// An attribute child the conversion of an op needs.
pub enum Leaf {
    /// An attribute leaf symbol.
    Attr(Symbol),
    /// A scalar f32 constant.
    Scalar(f32),
}

/// The e-node head and IR inputs for an op of the rule vocabulary, or `None` for opaque ops.
/// `rank` is the rank of the first input, when known; `leaf` adds an attribute child.
pub fn structured(
    op: &Op,
    inputs: &[Option<Id>],
    rank: Option<usize>,
    leaf: &mut dyn FnMut(Leaf) -> Id,
) -> Option<Spark> {
    let input = |i: usize| inputs.get(i).copied().flatten();
    let one = || Some([input(0)?]);
    let two = || Some([input(0)?, input(1)?]);
    let optional_tail = matches!(op, Op::Attention(_)) && inputs.len() == 4;
    if inputs.iter().any(Option::is_none) && !optional_tail {
        return None;
    }
    Some(match op {
        Op::Binary(Binary::Add) => Spark::Add(two()?),
        Op::Binary(Binary::Sub) => Spark::Sub(two()?),
        Op::Binary(Binary::Mul) => Spark::Mul(two()?),
        Op::Binary(Binary::Div) => Spark::Div(two()?),
        Op::Binary(Binary::Pow) => Spark::Pow(two()?),
        Op::Unary(Unary::Neg) => Spark::Neg(one()?),
        Op::Unary(Unary::Sqrt) => Spark::Sqrt(one()?),
        Op::Unary(Unary::Reciprocal) => Spark::Reciprocal(one()?),
        Op::Unary(Unary::Exp) => Spark::Exp(one()?),
        Op::Unary(Unary::Erf) => Spark::Erf(one()?),
        Op::Unary(Unary::Tanh) => Spark::Tanh(one()?),
        Op::Unary(Unary::Sigmoid) => Spark::Sigmoid(one()?),
        Op::Unary(Unary::Relu) => Spark::Relu(one()?),
        Op::Unary(Unary::Gelu {
            approximate: GeluApproximation::None,
        }) => Spark::Gelu(one()?),
        Op::Unary(Unary::Gelu {
            approximate: GeluApproximation::Tanh,
        }) => Spark::GeluTanh(one()?),
        Op::Unary(Unary::Swish { alpha }) if *alpha == 1.0 => Spark::Silu(one()?),
        Op::MatMul if inputs.len() == 2 => Spark::MatMul(two()?),
        Op::TransposedMatMul { trans_a, trans_b } => {
            let [a, b] = two()?;
            Spark::TransposedMatMul([a, b, leaf(Leaf::Attr(trans_symbol(*trans_a, *trans_b)))])
        }
        Op::Gemm {
            alpha,
            beta,
            trans_a: false,
            trans_b: false,
        } if *alpha == 1.0 && *beta == 1.0 && inputs.len() == 3 => {
            Spark::Gemm([input(0)?, input(1)?, input(2)?])
        }
        Op::Transpose { perm } if !perm.is_empty() => {
            Spark::Transpose([input(0)?, leaf(Leaf::Attr(perm_symbol(perm)))])
        }
        Op::Reshape { allowzero: false } => Spark::Reshape(two()?),
        Op::Softmax { axis } if rank.is_some_and(|r| *axis == -1 || *axis + 1 == r as i64) => {
            Spark::Softmax(one()?)
        }
        Op::Reduce {
            kind,
            keepdims: true,
            noop_with_empty_axes: false,
        } if inputs.len() == 2 => match kind {
            Reduction::Mean => Spark::ReduceMean(two()?),
            Reduction::Sum => Spark::ReduceSum(two()?),
            Reduction::Max => Spark::ReduceMax(two()?),
            _ => return None,
        },
        Op::Attention(a)
            if !a.is_causal
                && a.qk_matmul_output_mode == 0
                && a.softcap == 0.0
                && a.softmax_precision.is_none()
                && a.left_window_size == -1
                && a.right_window_size == -1
                && a.q_num_heads == a.kv_num_heads
                && (3..=4).contains(&inputs.len()) =>
        {
            let [q, k] = two()?;
            let v = input(2)?;
            let mask = input(3).unwrap_or_else(|| leaf(Leaf::Attr(Symbol::from(NONE))));
            let scale = leaf(Leaf::Scalar(a.scale?));
            let heads = leaf(Leaf::Attr(heads_symbol(a.q_num_heads)));
            Spark::Attention([q, k, v, mask, scale, heads])
        }
        _ => return None,
    })
}

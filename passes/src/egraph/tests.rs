//! Rule tests: each rule fires on a small graph and not where it must not, and every rule is
//! differentially tested: both sides, run by the CPU executor on random tensors of random valid
//! shapes, must agree.

use super::lang::Spark;
use super::rules::{self, Rule};
use super::{extract, from_egraph, to_egraph, RULE_FILES};
use crate::testing::{differential, graph_of, Inputs, X};
use egg::Language;
use sparkc_ir::{DType, Graph, Op, Tensor};
use std::collections::HashMap;

/// Applies `rule` once to `graph` and extracts the rewritten side, or `None` if it does not
/// fire.
fn rewrite_once(graph: &Graph, rule: &Rule) -> Option<Graph> {
    let (mut egraph, roots, origins) = to_egraph(graph).expect("e-graph");
    let matches = rule.rewrite.search(&egraph);
    rule.rewrite.apply(&mut egraph, &matches);
    egraph.rebuild();
    if egraph.analysis.applied.is_empty() {
        return None;
    }
    // Prefer, in every class, an e-node the rule added over the imported one, and never a
    // node reading its own class.
    let imported: std::collections::HashSet<Spark> = origins
        .iter()
        .map(|(n, _)| n.clone().map_children(|c| egraph.find(c)))
        .collect();
    let mut choice = extract::extract(&egraph, &super::Machine::GB10, &imported);
    for class in egraph.classes() {
        let acyclic = |n: &&Spark| n.children().iter().all(|c| egraph.find(*c) != class.id);
        let fresh = class
            .nodes
            .iter()
            .filter(acyclic)
            .find(|n| !imported.contains(n));
        if let Some(n) = fresh.or_else(|| class.nodes.iter().find(acyclic)) {
            choice.insert(class.id, n.clone());
        }
    }
    Some(from_egraph(&egraph, &choice, graph, &roots, &origins).expect("rebuilt"))
}

fn all_rules() -> HashMap<String, Rule> {
    RULE_FILES
        .iter()
        .flat_map(|(file, text)| rules::parse(file, text).expect("rule files parse"))
        .map(|r| (r.name.clone(), r))
        .collect()
}

/// `(rule, expression it must fire on, inputs)`.
const FIRES: &[(&str, &str, Inputs)] = &[
    ("add-commute", "(Add x y)", &[X, ("y", "f32[4]")]),
    ("mul-commute", "(Mul x y)", &[X, ("y", "f32[N,1]")]),
    ("add-zero", "(Add x 0)", &[X]),
    ("sub-zero", "(Sub x 0)", &[X]),
    ("mul-one", "(Mul x 1)", &[X]),
    ("div-one", "(Div x 1)", &[X]),
    ("pow-one", "(Pow x 1)", &[X]),
    ("pow-two", "(Pow x 2)", &[X]),
    ("neg-neg", "(Neg (Neg x))", &[X]),
    ("sub-neg", "(Sub x (Neg y))", &[X, ("y", "f32[4]")]),
    ("add-neg", "(Add x (Neg y))", &[X, ("y", "f32[N,4]")]),
    ("mul-reciprocal", "(Mul x (Reciprocal y))", &[X, ("y", "f32[1,4]")]),
    ("matmul-add-gemm", "(Add (MatMul a b) c)", &[("a", "f32[M,K]"), ("b", "f32[K,N]"), ("c", "f32[N]")]),
    ("gelu-erf", "(Mul (Mul x (Add (Erf (Div x 1.4142135)) 1)) 0.5)", &[X]),
    ("gelu-erf-half-first", "(Mul (Mul x 0.5) (Add (Erf (Div x 1.4142135)) 1))", &[X]),
    ("gelu-erf-half-inside", "(Mul x (Mul (Add (Erf (Div x 1.4142135)) 1) 0.5))", &[X]),
    ("gelu-erf-mul", "(Mul (Mul x (Add (Erf (Mul x 0.70710678)) 1)) 0.5)", &[X]),
    ("gelu-erf-mul-half-first", "(Mul (Mul x 0.5) (Add (Erf (Mul x 0.70710678)) 1))", &[X]),
    ("gelu-tanh", "(Mul (Mul x 0.5) (Add (Tanh (Mul (Add x (Mul (Pow x 3) 0.044715)) 0.7978846)) 1))", &[X]),
    ("gelu-tanh-half-last", "(Mul (Mul x (Add (Tanh (Mul (Add x (Mul (Pow x 3) 0.044715)) 0.7978846)) 1)) 0.5)", &[X]),
    ("silu", "(Mul x (Sigmoid x))", &[X]),
    ("softmax-shifted", "(Div (Exp (Sub x (ReduceMax x i:-1))) (ReduceSum (Exp (Sub x (ReduceMax x i:-1))) i:1))", &[X]),
    ("softmax-plain", "(Div (Exp x) (ReduceSum (Exp x) i:-1))", &[X]),
    ("layernorm", "(Add (Mul (Div (Sub x (ReduceMean x i:-1)) (Sqrt (Add (ReduceMean (Pow (Sub x (ReduceMean x i:-1)) 2) i:-1) 0.00001))) g) b)", &[X, ("g", "f32[4]"), ("b", "f32[4]")]),
    ("rmsnorm", "(Mul (Div x (Sqrt (Add (ReduceMean (Pow x 2) i:-1) 0.000001))) g)", &[X, ("g", "f32[4]")]),
    ("attention-div-mask", "(MatMul (Softmax (Add (Div (MatMul q (Transpose k p:0,1,3,2)) 2.0) m)) v)", &[("q", "f32[B,2,S,4]"), ("k", "f32[B,2,T,4]"), ("v", "f32[B,2,T,3]"), ("m", "f32[S,T]")]),
    ("attention-mul-mask", "(MatMul (Softmax (Add (Mul (MatMul q (Transpose k p:0,1,3,2)) 0.5) m)) v)", &[("q", "f32[B,2,S,4]"), ("k", "f32[B,2,T,4]"), ("v", "f32[B,2,T,3]"), ("m", "f32[B,1,1,T]")]),
    ("attention-div", "(MatMul (Softmax (Div (MatMul q (Transpose k p:0,1,3,2)) 2.0)) v)", &[("q", "f32[B,2,S,4]"), ("k", "f32[B,2,T,4]"), ("v", "f32[B,2,T,3]")]),
    ("attention-mul", "(MatMul (Softmax (Mul (MatMul q (Transpose k p:0,1,3,2)) 0.5)) v)", &[("q", "f32[B,2,S,4]"), ("k", "f32[B,2,T,4]"), ("v", "f32[B,2,T,3]")]),
    ("attention-heads", "(Reshape (Transpose (Attention (Transpose (Reshape q i:1,3,2,4) p:0,2,1,3) (Transpose (Reshape k i:1,5,2,4) p:0,2,1,3) (Transpose (Reshape v i:1,5,2,4) p:0,2,1,3) m 0.5 h:0) p:0,2,1,3) i:1,3,8)", &[("q", "f32[1,3,8]"), ("k", "f32[1,5,8]"), ("v", "f32[1,5,8]"), ("m", "f32[3,5]")]),
    ("transpose-transpose", "(Transpose (Transpose y p:0,2,1) p:2,0,1)", &[("y", "f32[A,B,C]")]),
    ("transpose-identity", "(Transpose y p:0,1,2)", &[("y", "f32[A,B,C]")]),
    ("matmul-transposed-b", "(MatMul a (Transpose b p:0,2,1))", &[("a", "f32[B,M,K]"), ("b", "f32[B,N,K]")]),
    ("matmul-transposed-a", "(MatMul (Transpose a p:1,0) b)", &[("a", "f32[K,M]"), ("b", "f32[K,N]")]),
];

/// `(rule, expression it must not fire on, inputs, why)`.
const REFUSES: &[(&str, &str, Inputs, &str)] = &[
    ("add-zero", "(Add x z)", &[X, ("z", "f32[1,1,4]")], "a zero input is not a constant"),
    ("mul-one", "(Mul x 2)", &[X], "the constant is not one"),
    ("pow-two", "(Pow x 3)", &[X], "the exponent is not two"),
    ("matmul-add-gemm", "(Add (MatMul a b) c)", &[("a", "f32[B,M,K]"), ("b", "f32[K,N]"), ("c", "f32[N]")], "a batched product is not a Gemm"),
    ("matmul-add-gemm", "(Add (MatMul a b) c)", &[("a", "f32[M,K]"), ("b", "f32[K,N]"), ("c", "f32[2,M,N]")], "the bias broadcasts the result to 3-D"),
    ("matmul-add-gemm", "(Mul (Add (MatMul a b) c) (MatMul a b))", &[("a", "f32[M,K]"), ("b", "f32[K,N]"), ("c", "f32[N]")], "the product is also read elsewhere"),
    ("gelu-erf", "(Mul (Mul x (Add (Erf (Div x 1.5)) 1)) 0.5)", &[X], "the divisor is not sqrt 2"),
    ("silu", "(Mul x (Sigmoid y))", &[X, ("y", "f32[N,4]")], "the sigmoid reads another value"),
    ("softmax-plain", "(Div (Exp x) (ReduceSum (Exp x) i:0))", &[X], "sums over the first axis"),
    ("layernorm", "(Add (Mul (Div (Sub x (ReduceMean x i:0)) (Sqrt (Add (ReduceMean (Pow (Sub x (ReduceMean x i:0)) 2) i:0) 0.00001))) g) b)", &[X, ("g", "f32[4]"), ("b", "f32[4]")], "normalizes the first axis"),
    ("layernorm", "(Add (Mul (Div (Sub x (ReduceMean x i:-1)) (Sqrt (Add (ReduceMean (Pow (Sub x (ReduceMean x i:-1)) 2) i:-1) 0.00001))) g) b)", &[X, ("g", "f32[N,4]"), ("b", "f32[4]")], "gamma varies along the batch"),
    ("rmsnorm", "(Mul (Div x (Sqrt (Add (ReduceMean (Pow x 2) i:-1) 0.000001))) g)", &[X, ("g", "f32[N,4]")], "gamma varies along the batch"),
    ("attention-div-mask", "(MatMul (Softmax (Add (Div (MatMul q (Transpose k p:0,2,1,3)) 2.0) m)) v)", &[("q", "f32[B,2,S,4]"), ("k", "f32[B,4,2,S]"), ("v", "f32[B,2,S,3]"), ("m", "f32[S,S]")], "the transpose does not swap the last two axes"),
    ("transpose-identity", "(Transpose y p:1,0,2)", &[("y", "f32[A,B,C]")], "not the identity"),
    ("matmul-transposed-b", "(MatMul a (Transpose b p:1,0,2))", &[("a", "f32[B,M,K]"), ("b", "f32[K,B,M]")], "not a swap of the last two axes"),
];

#[test]
fn every_rule_fires_and_both_sides_agree() {
    let rules = all_rules();
    for (name, expr, inputs) in FIRES {
        let rule = rules
            .get(*name)
            .unwrap_or_else(|| panic!("no rule named {name}"));
        let before = graph_of(expr, inputs);
        let after =
            rewrite_once(&before, rule).unwrap_or_else(|| panic!("{name} does not fire on {expr}"));
        differential(&before, &after, 6)
            .unwrap_or_else(|e| panic!("{name}: both sides differ: {e}"));
    }
}

#[test]
fn every_rule_has_a_firing_case() {
    let tested: Vec<&str> = FIRES.iter().map(|c| c.0).collect();
    for name in all_rules().keys() {
        assert!(
            tested.contains(&name.as_str()),
            "rule {name} has no test case in FIRES"
        );
    }
}

#[test]
fn rules_do_not_fire_where_they_must_not() {
    let rules = all_rules();
    for (name, expr, inputs, why) in REFUSES {
        let rule = &rules[*name];
        let graph = graph_of(expr, inputs);
        assert!(
            rewrite_once(&graph, rule).is_none(),
            "{name} fired on {expr}, but {why}"
        );
    }
}

#[test]
fn a_shape_changing_rewrite_is_refused() {
    // x + 0 where the zero is [1,1,4]: the sum is 3-D, x is 2-D, so replacing it would change
    // the shape; the rule matches but the shape check stops it.
    let rules = all_rules();
    let text = "(Add x z)";
    let mut graph = graph_of(text, &[X, ("z", "f32[1,1,4]")]);
    let z = graph.inputs[1];
    let zeros = Tensor::from_f64s(DType::F32, vec![1, 1, 4], &[0.0; 4]).expect("zeros");
    let name = graph.node(z).name.clone();
    graph.bind_input(&name, zeros).expect("bound");
    assert!(rewrite_once(&graph, &rules["add-zero"]).is_none());
}

#[test]
fn a_rule_that_holds_for_some_values_only_fails_the_differential_test() {
    let bad = rules::parse("bad.rules", "sqrt-square: (Sqrt (Mul ?x ?x)) => ?x").expect("parses");
    let before = graph_of("(Sqrt (Mul x x))", &[X]);
    let after = rewrite_once(&before, &bad[0]).expect("fires");
    assert!(differential(&before, &after, 6).is_err());
}

#[test]
fn bad_rule_files_name_their_line() {
    let cases = [
        (
            "ok: (Add ?a ?b) => (Add ?b ?a)\nbroken (Add ?a ?b)",
            "x.rules:2: expected 'name: LHS => RHS'",
        ),
        ("r: (Add ?a) => ?a", "x.rules:1: left-hand side"),
        (
            "r: (Mull ?a ?b) => ?a",
            "x.rules:1: left-hand side: 'Mull' with 2 operand(s)",
        ),
        (
            "r: (Add ?a ?b) => ?c",
            "x.rules:1: the right-hand side uses ?c",
        ),
        (
            "r: (Add ?a ?b) => ?a if (frobnicate ?a)",
            "x.rules:1: unknown condition 'frobnicate'",
        ),
        (
            "r: (Add ?a ?b) => ?a\nr: (Mul ?a ?b) => ?a",
            "x.rules:2: rule 'r' is defined twice",
        ),
    ];
    for (text, want) in cases {
        let err = rules::parse("x.rules", text)
            .err()
            .expect("an error")
            .to_string();
        assert!(err.starts_with(want), "{err}");
    }
}

#[test]
fn rules_need_their_conditions_to_bind() {
    let graph = graph_of(
        "(Transpose (Transpose y p:1,0) p:1,0)",
        &[("y", "f32[A,B]")],
    );
    let after = rewrite_once(&graph, &all_rules()["transpose-transpose"]).expect("fires");
    let ops: Vec<String> = after.dag.node_weights().map(|n| n.op.name()).collect();
    assert!(ops.contains(&"Transpose".to_string()), "{ops:?}");
    assert!(matches!(
        after.dag.node_weights().find(|n| matches!(n.op, Op::Transpose { .. })).map(|n| &n.op),
        Some(Op::Transpose { perm }) if perm == &vec![0, 1]
    ));
}

#[test]
fn runner_limits_stop_a_stage_and_the_result_still_holds() {
    use super::{Limits, Saturate};
    use crate::Pass;
    // A sum of many terms: commutativity doubles its e-nodes, past a limit of 30.
    let mut expr = String::from("x");
    for k in 0..12 {
        expr = format!("(Add {expr} (Mul x {}))", k + 2);
    }
    let before = graph_of(&expr, &[X]);
    let limits = Limits {
        iterations: 50,
        nodes: 30,
        time: std::time::Duration::from_secs(5),
    };
    let mut pass = Saturate::new().expect("rules parse").limits(limits);
    let mut after = before.clone();
    pass.run(&mut after).expect("runs");
    assert!(
        pass.reports[0].stop.starts_with("node limit"),
        "{:?}",
        pass.reports[0]
    );
    sparkc_ir::verify(&after).expect("verifies");
    differential(&before, &after, 3).expect("same results");
}

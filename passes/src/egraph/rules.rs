//! Rule files: `name: LHS => RHS [if CONDITION...]`, one rule a line, `#` comments.
//!
//! Patterns are egg s-expressions over [`Spark`]; conditions are s-expressions naming a check
//! on the matched e-classes. Every rule is also shape-checked: the right-hand side's type is
//! inferred from the match before it is added, and a rule whose result would differ in dtype
//! or shape from what it replaces does not apply.

use super::analysis::{make_data, Data, Types};
use super::lang::{self, Spark};
use egg::{
    Applier, EGraph, ENodeOrVar, Id, Language, Pattern, PatternAst, Rewrite, Subst, Symbol, Var,
};
use sparkc_ir::{Known, Tensor};
use std::collections::HashSet;
use std::str::FromStr;

/// A rule file that does not parse, with the line at fault.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct RuleError {
    /// The file's name.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// A check on a match, some of which bind a new variable.
#[derive(Clone, Debug)]
pub enum Condition {
    /// The class is a single-element constant, optionally of this value.
    Scalar(Var, Option<f64>),
    /// The class is a tensor of this rank.
    Rank(Var, usize),
    /// The class has floating-point elements.
    Float(Var),
    /// The value (a variable or a pattern over bound variables) is read by one e-class only
    /// and is not a graph output.
    OneUser(PatternAst<Spark>),
    /// The first class is a constant axes list naming only the last axis of the second.
    LastAxis(Var, Var),
    /// The permutation leaf swaps the last two axes and keeps the others.
    SwapsLastTwo(Var),
    /// The permutation leaf is the identity.
    IdentityPerm(Var),
    /// Binds the third variable to the permutation of applying the first, then the second.
    Compose(Var, Var, Var),
    /// Binds the second variable to a scalar constant `1/x` of the first's dtype.
    Inverse(Var, Var),
    /// The first class is a 3-D tensor `[B, S, H*D]` and the second a constant shape
    /// `[B, S, H, D]` splitting its last axis into heads; binds (or checks) the third variable
    /// as the `h:H` leaf.
    SplitHeads(Var, Var, Var),
}

/// A parsed rule: its name and the rewrite egg runs.
pub struct Rule {
    /// Name, unique across files.
    pub name: String,
    /// The rewrite egg runs.
    pub rewrite: Rewrite<Spark, Types>,
}

/// Applies a right-hand side when the conditions hold and its type equals the match's.
struct CheckedApplier {
    rule: String,
    /// The left-hand side, to find the rewrites that built what the rule consumes.
    lhs: PatternAst<Spark>,
    rhs: Pattern<Spark>,
    conditions: Vec<Condition>,
    /// The rule only reorders an op's operands (`a + b => b + a`): it builds nothing worth
    /// naming in explanations.
    reorders: bool,
}

/// True when `rhs` is `lhs`'s root op over a permutation of the same variables.
fn only_reorders(lhs: &Pattern<Spark>, rhs: &Pattern<Spark>) -> bool {
    let root_vars = |p: &Pattern<Spark>| -> Option<(Spark, Vec<Var>)> {
        let nodes = p.ast.as_ref();
        let ENodeOrVar::ENode(root) = nodes.last()? else {
            return None;
        };
        let mut vars: Vec<Var> = root
            .children()
            .iter()
            .map(|&c| match &nodes[usize::from(c)] {
                ENodeOrVar::Var(v) => Some(*v),
                ENodeOrVar::ENode(_) => None,
            })
            .collect::<Option<_>>()?;
        vars.sort();
        Some((root.clone(), vars))
    };
    match (root_vars(lhs), root_vars(rhs)) {
        (Some((a, x)), Some((b, y))) => a.matches(&b) && x == y,
        _ => false,
    }
}

fn class_data(egraph: &EGraph<Spark, Types>, id: Id) -> Data {
    egraph[id].data.clone()
}

fn known_ints(data: &Data) -> Option<Vec<i64>> {
    match &data.value()?.known {
        Some(Known::Ints(dims)) => dims.iter().map(|d| d.as_const()).collect(),
        Some(Known::Floats(_)) | None => None,
    }
}

fn rank(data: &Data) -> Option<usize> {
    data.value()?.ty.as_tensor()?.shape.as_ref().map(Vec::len)
}

/// Evaluates a condition, binding its output variable in `subst` when it has one.
fn check(egraph: &mut EGraph<Spark, Types>, condition: &Condition, subst: &mut Subst) -> bool {
    let data = |egraph: &EGraph<Spark, Types>, v: &Var| class_data(egraph, subst[*v]);
    match condition {
        Condition::Scalar(v, value) => match (data(egraph, v).scalar, value) {
            (Some(x), Some(want)) => (x - want).abs() <= 1e-6 * want.abs().max(1.0),
            (Some(_), None) => true,
            (None, _) => false,
        },
        Condition::Rank(v, r) => rank(&data(egraph, v)) == Some(*r),
        Condition::Float(v) => data(egraph, v)
            .value()
            .and_then(|v| v.ty.as_tensor())
            .is_some_and(|t| t.dtype.is_float()),
        Condition::OneUser(pattern) => {
            let Some(id) = lookup(egraph, pattern, subst) else {
                return false;
            };
            let outputs = &egraph.analysis.outputs;
            if outputs.iter().any(|&o| egraph.find(o) == id) {
                return false;
            }
            let users: HashSet<Id> = egraph[id].parents().map(|p| egraph.find(p)).collect();
            users.len() == 1
        }
        Condition::LastAxis(axes, x) => {
            let (axes, x) = (data(egraph, axes), data(egraph, x));
            match (known_ints(&axes), rank(&x)) {
                (Some(a), Some(r)) => a.len() == 1 && (a[0] == -1 || a[0] + 1 == r as i64),
                _ => false,
            }
        }
        Condition::SwapsLastTwo(p) => match data(egraph, p).leaf.and_then(lang::parse_perm) {
            Some(perm) if perm.len() >= 2 => {
                let n = perm.len() as i64;
                perm.iter().enumerate().all(|(i, &q)| match i as i64 {
                    i if i == n - 2 => q == n - 1,
                    i if i == n - 1 => q == n - 2,
                    i => q == i,
                })
            }
            _ => false,
        },
        Condition::IdentityPerm(p) => data(egraph, p)
            .leaf
            .and_then(lang::parse_perm)
            .is_some_and(|perm| crate::edit::is_identity(&perm)),
        Condition::Compose(p, q, r) => {
            let (Some(p1), Some(q1)) = (
                data(egraph, p).leaf.and_then(lang::parse_perm),
                data(egraph, q).leaf.and_then(lang::parse_perm),
            ) else {
                return false;
            };
            if p1.len() != q1.len() {
                return false;
            }
            let composed: Option<Vec<i64>> = q1
                .iter()
                .map(|&i| usize::try_from(i).ok().and_then(|i| p1.get(i).copied()))
                .collect();
            let Some(composed) = composed else {
                return false;
            };
            let leaf = egraph.add(Spark::Opaque(lang::perm_symbol(&composed), Vec::new()));
            subst.insert(*r, leaf);
            true
        }
        Condition::Inverse(x, out) => {
            let d = data(egraph, x);
            let (Some(value), Some(dtype)) = (
                d.scalar,
                d.value().and_then(|v| v.ty.as_tensor()).map(|t| t.dtype),
            ) else {
                return false;
            };
            if value == 0.0 || !dtype.is_float() {
                return false;
            }
            let Ok(tensor) = Tensor::from_f64s(dtype, vec![], &[1.0 / value]) else {
                return false;
            };
            let symbol = egraph.analysis.table.scalar(tensor);
            let id = egraph.add(Spark::Opaque(symbol, Vec::new()));
            subst.insert(*out, id);
            true
        }
        Condition::SplitHeads(x, shape, heads) => {
            let (x, shape) = (data(egraph, x), data(egraph, shape));
            let dims = x
                .value()
                .and_then(|v| v.ty.as_tensor())
                .and_then(|t| t.shape.clone());
            let (Some(dims), Some(split)) = (dims, known_ints(&shape)) else {
                return false;
            };
            let Some(width) = dims.get(2).and_then(|d| d.as_const()) else {
                return false;
            };
            let leading = dims.len() == 3
                && split.len() == 4
                && (0..2).all(|i| {
                    split[i] == 0 || split[i] == -1 || dims[i].as_const() == Some(split[i])
                });
            if !leading || split[2] <= 0 || split[3] <= 0 || split[2] * split[3] != width {
                return false;
            }
            let leaf = egraph.add(Spark::Opaque(lang::heads_symbol(split[2]), Vec::new()));
            match subst.get(*heads) {
                Some(&bound) => egraph.find(bound) == egraph.find(leaf),
                None => {
                    subst.insert(*heads, leaf);
                    true
                }
            }
        }
    }
}

/// The e-class a pattern over bound variables names, if the e-graph has it.
fn lookup(egraph: &EGraph<Spark, Types>, ast: &PatternAst<Spark>, subst: &Subst) -> Option<Id> {
    lookup_all(egraph, ast, subst)?.pop()
}

/// The e-class of every node of a pattern over bound variables, in the pattern's order.
fn lookup_all(
    egraph: &EGraph<Spark, Types>,
    ast: &PatternAst<Spark>,
    subst: &Subst,
) -> Option<Vec<Id>> {
    let mut ids: Vec<Id> = Vec::with_capacity(ast.as_ref().len());
    for node in ast.as_ref() {
        let id = match node {
            ENodeOrVar::Var(v) => egraph.find(*subst.get(*v)?),
            ENodeOrVar::ENode(n) => {
                let n = n.clone().map_children(|c| ids[usize::from(c)]);
                egraph.lookup(n)?
            }
        };
        ids.push(id);
    }
    Some(ids)
}

/// The data the right-hand side would have under `subst`, computed without adding it.
fn dry_data(egraph: &EGraph<Spark, Types>, ast: &PatternAst<Spark>, subst: &Subst) -> Data {
    let mut computed: Vec<Data> = Vec::with_capacity(ast.as_ref().len());
    for node in ast.as_ref() {
        let data = match node {
            ENodeOrVar::Var(v) => class_data(egraph, subst[*v]),
            ENodeOrVar::ENode(n) => {
                // Children are indices into `computed`; look them up there.
                let lookup = |id: Id| computed[usize::from(id)].clone();
                if n.is_leaf() {
                    egraph
                        .lookup(n.clone())
                        .map(|id| class_data(egraph, id))
                        .unwrap_or_else(|| make_data(&egraph.analysis.table, n, &lookup))
                } else {
                    make_data(&egraph.analysis.table, n, &lookup)
                }
            }
        };
        computed.push(data);
    }
    computed.pop().unwrap_or_default()
}

impl Applier<Spark, Types> for CheckedApplier {
    fn apply_one(
        &self,
        egraph: &mut EGraph<Spark, Types>,
        eclass: Id,
        subst: &Subst,
        searcher_ast: Option<&PatternAst<Spark>>,
        rule_name: Symbol,
    ) -> Vec<Id> {
        let mut subst = subst.clone();
        for condition in &self.conditions {
            if !check(egraph, condition, &mut subst) {
                return Vec::new();
            }
        }
        let expected = class_data(egraph, eclass);
        let got = dry_data(egraph, &self.rhs.ast, &subst);
        let types = |d: &Data| d.outputs.iter().map(|v| v.ty.clone()).collect::<Vec<_>>();
        if expected.outputs.is_empty() || types(&expected) != types(&got) {
            return Vec::new();
        }
        let applied = self
            .rhs
            .apply_one(egraph, eclass, &subst, searcher_ast, rule_name);
        if !applied.is_empty() {
            let head = match self.rhs.ast.as_ref().last() {
                Some(ENodeOrVar::ENode(n)) => n.to_string(),
                _ => String::new(),
            };
            // The rules that built the ops this match consumed come first in its provenance.
            let consumed: Vec<Id> = lookup_all(egraph, &self.lhs, &subst)
                .map(|ids| ids[..ids.len().saturating_sub(1)].to_vec())
                .unwrap_or_default();
            let mut rules: Vec<String> = Vec::new();
            for a in &egraph.analysis.applied {
                let inner = a.builds && consumed.contains(&egraph.find(a.class));
                if inner && !rules.contains(&a.rule) {
                    rules.push(a.rule.clone());
                }
            }
            rules.push(self.rule.clone());
            for rule in rules {
                egraph.analysis.applied.push(super::analysis::Applied {
                    class: eclass,
                    head: head.clone(),
                    rule,
                    builds: !self.reorders,
                });
            }
        }
        applied
    }
}

/// Splits text into top-level items: words and balanced parenthesized groups.
fn items(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut current = String::new();
    for c in text.chars() {
        match c {
            '(' => {
                depth += 1;
                current.push(c);
            }
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("unbalanced ')' in '{text}'"))?;
                current.push(c);
                if depth == 0 {
                    out.push(std::mem::take(&mut current));
                }
            }
            c if c.is_whitespace() && depth == 0 => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if depth != 0 {
        return Err(format!("unclosed '(' in '{text}'"));
    }
    if !current.is_empty() {
        out.push(current);
    }
    Ok(out)
}

/// Splits a condition list `(a ?x) (b (Mul ?x ?y) 2)` into each condition's parts.
fn split_conditions(text: &str) -> Result<Vec<Vec<String>>, String> {
    items(text)?
        .into_iter()
        .map(|item| {
            let inner = item
                .strip_prefix('(')
                .and_then(|i| i.strip_suffix(')'))
                .ok_or_else(|| format!("a condition must be in parentheses, found '{item}'"))?;
            items(inner)
        })
        .collect()
}

fn parse_condition(parts: &[String], bound: &mut HashSet<Var>) -> Result<Condition, String> {
    let (name, args) = parts
        .split_first()
        .ok_or_else(|| "an empty condition".to_string())?;
    let var = |i: usize, bound: &HashSet<Var>| -> Result<Var, String> {
        let text = args
            .get(i)
            .ok_or_else(|| format!("'{name}' needs argument {}", i + 1))?;
        let v = Var::from_str(text).map_err(|e| format!("bad variable '{text}': {e}"))?;
        if !bound.contains(&v) {
            return Err(format!(
                "'{name}' reads {text}, which the pattern does not bind"
            ));
        }
        Ok(v)
    };
    let fresh = |i: usize, bound: &mut HashSet<Var>| -> Result<Var, String> {
        let text = args
            .get(i)
            .ok_or_else(|| format!("'{name}' needs argument {}", i + 1))?;
        let v = Var::from_str(text).map_err(|e| format!("bad variable '{text}': {e}"))?;
        bound.insert(v);
        Ok(v)
    };
    let count = |n: usize| -> Result<(), String> {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!(
                "'{name}' takes {n} argument(s), found {}",
                args.len()
            ))
        }
    };
    Ok(match name.as_str() {
        "scalar" => {
            let value = match args.get(1) {
                Some(t) => Some(
                    t.parse::<f64>()
                        .map_err(|_| format!("'{t}' is not a number"))?,
                ),
                None => None,
            };
            if args.len() > 2 {
                return Err("'scalar' takes 1 or 2 arguments".into());
            }
            Condition::Scalar(var(0, bound)?, value)
        }
        "rank" => {
            count(2)?;
            let r = args[1]
                .parse()
                .map_err(|_| format!("'{}' is not a rank", args[1]))?;
            Condition::Rank(var(0, bound)?, r)
        }
        "float" => {
            count(1)?;
            Condition::Float(var(0, bound)?)
        }
        "one-user" => {
            count(1)?;
            let pattern: Pattern<Spark> = args[0]
                .parse()
                .map_err(|e| format!("bad pattern '{}': {e}", args[0]))?;
            if let Some(v) = pattern.vars().iter().find(|v| !bound.contains(v)) {
                return Err(format!(
                    "'one-user' reads {v}, which the pattern does not bind"
                ));
            }
            Condition::OneUser(pattern.ast)
        }
        "last-axis" => {
            count(2)?;
            Condition::LastAxis(var(0, bound)?, var(1, bound)?)
        }
        "swaps-last-two" => {
            count(1)?;
            Condition::SwapsLastTwo(var(0, bound)?)
        }
        "identity-perm" => {
            count(1)?;
            Condition::IdentityPerm(var(0, bound)?)
        }
        "compose" => {
            count(3)?;
            Condition::Compose(var(0, bound)?, var(1, bound)?, fresh(2, bound)?)
        }
        "inverse" => {
            count(2)?;
            Condition::Inverse(var(0, bound)?, fresh(1, bound)?)
        }
        "split-heads" => {
            count(3)?;
            let heads_var =
                Var::from_str(&args[2]).map_err(|e| format!("bad variable '{}': {e}", args[2]))?;
            let heads = if bound.contains(&heads_var) {
                heads_var
            } else {
                fresh(2, bound)?
            };
            Condition::SplitHeads(var(0, bound)?, var(1, bound)?, heads)
        }
        other => return Err(format!("unknown condition '{other}'")),
    })
}

/// Checks that a pattern uses only the rule vocabulary: ops the language names, and the
/// attribute leaves `none`, `p:...`, `t:..` and `h:..`.
fn check_vocabulary(pattern: &Pattern<Spark>) -> Result<(), String> {
    for node in pattern.ast.as_ref() {
        if let ENodeOrVar::ENode(Spark::Opaque(symbol, children)) = node {
            let s = symbol.as_str();
            if !children.is_empty() {
                return Err(format!(
                    "'{s}' with {} operand(s) is not an op of the rule vocabulary",
                    children.len()
                ));
            }
            let attribute = s == lang::NONE
                || lang::parse_perm(*symbol).is_some()
                || lang::parse_trans(*symbol).is_some()
                || lang::parse_heads(*symbol).is_some();
            if !attribute {
                return Err(format!(
                    "'{s}' is not an attribute leaf (none, p:..., t:.., h:..)"
                ));
            }
        }
    }
    Ok(())
}

/// Parses one rule file; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Vec<Rule>, RuleError> {
    let mut rules = Vec::new();
    let mut names = HashSet::new();
    for (index, raw) in text.lines().enumerate() {
        let fail = |message: String| RuleError {
            file: file.to_string(),
            line: index + 1,
            message,
        };
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (name, body) = line
            .split_once(':')
            .ok_or_else(|| fail("expected 'name: LHS => RHS'".into()))?;
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(fail(format!("bad rule name '{name}'")));
        }
        if !names.insert(name.to_string()) {
            return Err(fail(format!("rule '{name}' is defined twice")));
        }
        let (lhs, rest) = body
            .split_once("=>")
            .ok_or_else(|| fail("expected '=>'".into()))?;
        let (rhs, conditions) = match rest.split_once(" if ") {
            Some((r, c)) => (r, c),
            None => (rest, ""),
        };
        let lhs_pattern: Pattern<Spark> = lhs
            .trim()
            .parse()
            .map_err(|e| fail(format!("left-hand side: {e}")))?;
        let rhs_pattern: Pattern<Spark> = rhs
            .trim()
            .parse()
            .map_err(|e| fail(format!("right-hand side: {e}")))?;
        check_vocabulary(&lhs_pattern).map_err(|e| fail(format!("left-hand side: {e}")))?;
        check_vocabulary(&rhs_pattern).map_err(|e| fail(format!("right-hand side: {e}")))?;
        let mut bound: HashSet<Var> = lhs_pattern.vars().into_iter().collect();
        let conditions = split_conditions(conditions)
            .map_err(fail)?
            .iter()
            .map(|parts| parse_condition(parts, &mut bound))
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        if let Some(v) = rhs_pattern.vars().iter().find(|v| !bound.contains(v)) {
            return Err(fail(format!(
                "the right-hand side uses {v}, which nothing binds"
            )));
        }
        let applier = CheckedApplier {
            rule: name.to_string(),
            lhs: lhs_pattern.ast.clone(),
            reorders: only_reorders(&lhs_pattern, &rhs_pattern),
            rhs: rhs_pattern,
            conditions,
        };
        let rewrite = Rewrite::new(name, lhs_pattern, applier).map_err(fail)?;
        rules.push(Rule {
            name: name.to_string(),
            rewrite,
        });
    }
    Ok(rules)
}

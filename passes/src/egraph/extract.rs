//! DAG-aware extraction: each e-class picks the e-node whose whole set of needed e-classes
//! costs least, counting a class shared by several users once (egg's tree extractor counts
//! it once per use, which makes shared values look expensive and overflows on deep nets).
//!
//! The algorithm is the greedy DAG extractor of extraction-gym: iterate to a fixed point,
//! giving each class the cheapest node whose children all have a cost, where a node's cost is
//! its own plus the union of its children's cost sets.

use super::analysis::{to_ir, Types};
use super::lang::Spark;
use crate::cost::{node_seconds, Machine};
use egg::{EGraph, Id, Language};
use std::collections::{HashMap, HashSet};

/// The cost of a class: a sorted set of `(class, own cost)` it needs, and their total.
#[derive(Clone, Debug)]
struct CostSet {
    total: f64,
    members: Vec<(Id, f64)>,
}

/// Merges sorted member lists, keeping one entry per class.
fn union(a: &[(Id, f64)], b: &[(Id, f64)]) -> Vec<(Id, f64)> {
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// The cost of one e-node on its own: seconds on `machine`, nothing for a value computable
/// from constants (the pipeline folds it after extraction), infinite when it is ill-typed.
pub fn enode_cost(egraph: &EGraph<Spark, Types>, machine: &Machine, node: &Spark) -> f64 {
    if egraph
        .lookup(node.clone())
        .is_some_and(|id| egraph[id].data.constant)
    {
        return 0.0;
    }
    let data = |id: Id| egraph[id].data.clone();
    match to_ir(&egraph.analysis.table, node, &data) {
        None => 0.0,
        Some((op, inputs)) => {
            let values: Vec<Option<sparkc_ir::Value>> = inputs
                .iter()
                .map(|i| i.and_then(|id| egraph[id].data.value().cloned()))
                .collect();
            let refs: Vec<Option<&sparkc_ir::Value>> = values.iter().map(Option::as_ref).collect();
            let class = egraph.lookup(node.clone()).map(|id| &egraph[id].data);
            match class {
                Some(d) if !d.outputs.is_empty() => node_seconds(machine, &op, &refs, &d.outputs),
                _ => f64::INFINITY,
            }
        }
    }
}

/// Added to the cost of an e-node the import did not make, so that of equally cheap forms the
/// graph's own is kept (with its names): far below any real cost.
const REWRITTEN_TIE_BREAK: f64 = 1e-12;

/// The chosen e-node of every reachable class; `imported` holds the (canonical) e-nodes the
/// graph came with, preferred among equals.
pub fn extract(
    egraph: &EGraph<Spark, Types>,
    machine: &Machine,
    imported: &HashSet<Spark>,
) -> HashMap<Id, Spark> {
    let mut costs: HashMap<Id, CostSet> = HashMap::new();
    let mut choice: HashMap<Id, Spark> = HashMap::new();
    let own: HashMap<(Id, usize), f64> = egraph
        .classes()
        .flat_map(|c| c.nodes.iter().enumerate().map(move |(k, n)| ((c.id, k), n)))
        .map(|(key, n)| {
            let bias = if imported.contains(n) {
                0.0
            } else {
                REWRITTEN_TIE_BREAK
            };
            (key, enode_cost(egraph, machine, n) + bias)
        })
        .collect();
    // A worklist in class-id order (the import added producers before consumers); a class
    // whose cost improves puts its users back on the list.
    let mut ids: Vec<Id> = egraph.classes().map(|c| c.id).collect();
    ids.sort();
    let mut queue: std::collections::VecDeque<Id> = ids.iter().copied().collect();
    let mut queued: std::collections::HashSet<Id> = ids.iter().copied().collect();
    while let Some(id) = queue.pop_front() {
        queued.remove(&id);
        let class = &egraph[id];
        let mut improved = false;
        for (k, node) in class.nodes.iter().enumerate() {
            let cost = own[&(class.id, k)];
            if !cost.is_finite() {
                continue;
            }
            let children: Option<Vec<&CostSet>> = node
                .children()
                .iter()
                .map(|c| costs.get(&egraph.find(*c)))
                .collect();
            let Some(children) = children else { continue };
            let mut members: Vec<(Id, f64)> = Vec::new();
            for child in children {
                members = union(&members, &child.members);
            }
            let at = match members.binary_search_by(|m| m.0.cmp(&class.id)) {
                Ok(_) => continue,
                Err(at) => at,
            };
            let total = members.iter().map(|m| m.1).sum::<f64>() + cost;
            let better = costs
                .get(&class.id)
                .is_none_or(|old| total < old.total * (1.0 - 1e-9) - 1e-15);
            if better {
                members.insert(at, (class.id, cost));
                costs.insert(class.id, CostSet { total, members });
                choice.insert(class.id, node.clone());
                improved = true;
            }
        }
        if improved {
            for parent in class.parents() {
                let parent = egraph.find(parent);
                if queued.insert(parent) {
                    queue.push_back(parent);
                }
            }
        }
    }
    choice
}

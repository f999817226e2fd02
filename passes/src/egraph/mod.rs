//! Equality saturation: the graph goes into an e-graph, the rule files run in stages, and the
//! cheapest equivalent graph under the cost model comes back out.

pub mod analysis;
pub mod extract;
pub mod lang;
pub mod rules;

pub use crate::cost::Machine;
use crate::manager::{Pass, PassError};
use analysis::{to_ir, Types};
use egg::{BackoffScheduler, EGraph, Id, Language, Runner, StopReason, Symbol};
use lang::{Entry, Spark};
use sparkc_ir::{Graph, NodeId, Op, ValueRef};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// The rule files, in the order their stages run.
pub const RULE_FILES: [(&str, &str); 3] = [
    ("algebra.rules", include_str!("../../rules/algebra.rules")),
    ("fusion.rules", include_str!("../../rules/fusion.rules")),
    ("layout.rules", include_str!("../../rules/layout.rules")),
];

/// One stage: a rule file run to saturation or to its limits.
pub struct Stage {
    /// The stage's name (its file's name without `.rules`).
    pub name: String,
    /// Its rules.
    pub rules: Vec<rules::Rule>,
}

/// Limits of each stage's runner.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most iterations.
    pub iterations: usize,
    /// Most e-nodes.
    pub nodes: usize,
    /// Most time.
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            iterations: 12,
            nodes: 200_000,
            time: Duration::from_millis(1500),
        }
    }
}

/// What one stage did.
#[derive(Clone, Debug)]
pub struct StageReport {
    /// Stage name.
    pub name: String,
    /// Iterations run.
    pub iterations: usize,
    /// E-nodes at the end.
    pub nodes: usize,
    /// E-classes at the end.
    pub classes: usize,
    /// Why it stopped.
    pub stop: String,
    /// Time taken.
    pub time: Duration,
}

/// The equality-saturation pass.
pub struct Saturate {
    stages: Vec<Stage>,
    limits: Limits,
    machine: Machine,
    /// What each stage did in the last run.
    pub reports: Vec<StageReport>,
}

impl Saturate {
    /// The pass with the built-in rule files, parsed now.
    pub fn new() -> Result<Saturate, rules::RuleError> {
        Saturate::with_rules(&RULE_FILES)
    }

    /// The pass with these `(file name, text)` rule files, each a stage.
    pub fn with_rules(files: &[(&str, &str)]) -> Result<Saturate, rules::RuleError> {
        let stages = files
            .iter()
            .map(|(file, text)| {
                Ok(Stage {
                    name: file.trim_end_matches(".rules").to_string(),
                    rules: rules::parse(file, text)?,
                })
            })
            .collect::<Result<Vec<_>, rules::RuleError>>()?;
        Ok(Saturate {
            stages,
            limits: Limits::default(),
            machine: Machine::GB10,
            reports: Vec::new(),
        })
    }

    /// Sets the runner limits of every stage.
    pub fn limits(mut self, limits: Limits) -> Saturate {
        self.limits = limits;
        self
    }
}

impl Pass for Saturate {
    fn name(&self) -> &'static str {
        "saturate"
    }

    fn run(&mut self, graph: &mut Graph) -> Result<String, PassError> {
        let (mut egraph, roots, origins) = to_egraph(graph)?;
        self.reports.clear();
        for stage in &self.stages {
            let start = Instant::now();
            let rewrites: Vec<_> = stage.rules.iter().map(|r| &r.rewrite).collect();
            let runner = Runner::default()
                .with_egraph(egraph)
                .with_iter_limit(self.limits.iterations)
                .with_node_limit(self.limits.nodes)
                .with_time_limit(self.limits.time)
                .with_scheduler(BackoffScheduler::default())
                .run(rewrites);
            let stop = match &runner.stop_reason {
                Some(StopReason::Saturated) => "saturated".to_string(),
                Some(StopReason::IterationLimit(n)) => format!("iteration limit {n}"),
                Some(StopReason::NodeLimit(n)) => format!("node limit {n}"),
                Some(StopReason::TimeLimit(t)) => format!("time limit {t:.2}s"),
                Some(StopReason::Other(s)) => s.clone(),
                None => "not run".to_string(),
            };
            self.reports.push(StageReport {
                name: stage.name.clone(),
                iterations: runner.iterations.len(),
                nodes: runner.egraph.total_number_of_nodes(),
                classes: runner.egraph.number_of_classes(),
                stop,
                time: start.elapsed(),
            });
            egraph = runner.egraph;
        }
        let imported: HashSet<Spark> = origins
            .iter()
            .map(|(n, _)| n.clone().map_children(|c| egraph.find(c)))
            .collect();
        let choice = extract::extract(&egraph, &self.machine, &imported);
        *graph = from_egraph(&egraph, &choice, graph, &roots, &origins)?;
        let summary: Vec<String> = self
            .reports
            .iter()
            .map(|r| {
                format!(
                    "{} {} it, {} e-nodes, {} e-classes, {}",
                    r.name, r.iterations, r.nodes, r.classes, r.stop
                )
            })
            .collect();
        Ok(summary.join("; "))
    }
}

/// The names of an imported node, for reuse when extraction keeps it.
struct Origin {
    name: String,
    values: Vec<String>,
}

fn node_error(graph: &Graph, id: NodeId, message: impl Into<String>) -> PassError {
    let node = graph.node(id);
    PassError::Node {
        node: node.name.clone(),
        op: node.op.name(),
        message: message.into(),
    }
}

/// A graph in an e-graph: the e-graph, the class of each graph output, and the e-nodes the
/// import made, with their names.
type Imported = (EGraph<Spark, Types>, Vec<Id>, Vec<(Spark, Origin)>);

/// Builds the e-graph of `graph`.
fn to_egraph(graph: &Graph) -> Result<Imported, PassError> {
    let mut egraph: EGraph<Spark, Types> = EGraph::new(Types::default());
    let mut ids: HashMap<ValueRef, Id> = HashMap::new();
    let mut origins = Vec::new();
    let none = egraph.add(Spark::Opaque(lang::NONE.into(), Vec::new()));
    let position: HashMap<NodeId, usize> = graph
        .inputs
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i))
        .collect();
    for id in graph.topo_order()? {
        let node = graph.node(id);
        let at = |output| ValueRef { node: id, output };
        let enode = match &node.op {
            Op::Input => {
                let i = *position.get(&id).ok_or_else(|| {
                    node_error(graph, id, "an input node that is not a graph input")
                })?;
                Spark::Opaque(
                    egraph.analysis.table.input(i, node.outputs[0].clone()),
                    Vec::new(),
                )
            }
            Op::Const(tensor) => {
                Spark::Opaque(egraph.analysis.table.constant(tensor.clone()), Vec::new())
            }
            op => {
                let inputs: Vec<Option<Id>> =
                    graph
                        .inputs_of(id)
                        .iter()
                        .map(|v| match v {
                            Some(v) => ids.get(v).copied().map(Some).ok_or_else(|| {
                                node_error(graph, id, "reads a value defined nowhere")
                            }),
                            None => Ok(None),
                        })
                        .collect::<Result<_, _>>()?;
                let rank = inputs
                    .first()
                    .copied()
                    .flatten()
                    .and_then(|i| egraph[i].data.value().cloned())
                    .and_then(|v| {
                        v.ty.as_tensor()
                            .and_then(|t| t.shape.as_ref().map(Vec::len))
                    });
                let single = node.outputs.len() == 1 && !matches!(op, Op::Dropout { .. });
                let structured = if single {
                    lang::structured(op, &inputs, rank, &mut |leaf| {
                        let symbol = match leaf {
                            lang::Leaf::Attr(s) => s,
                            lang::Leaf::Scalar(x) => match sparkc_ir::Tensor::from_f64s(
                                sparkc_ir::DType::F32,
                                vec![],
                                &[f64::from(x)],
                            ) {
                                Ok(t) => egraph.analysis.table.scalar(t),
                                Err(_) => Symbol::from(lang::NONE),
                            },
                        };
                        egraph.add(Spark::Opaque(symbol, Vec::new()))
                    })
                } else {
                    None
                };
                match structured {
                    Some(n) => n,
                    None => {
                        // Ops that draw random numbers stay distinct even with equal inputs.
                        let symbol = match op {
                            Op::Dropout { .. } => {
                                egraph.analysis.table.unique_op(op, node.outputs.len())
                            }
                            op => egraph.analysis.table.op(op, node.outputs.len()),
                        };
                        let children = inputs.iter().map(|i| i.unwrap_or(none)).collect();
                        Spark::Opaque(symbol, children)
                    }
                }
            }
        };
        let class = egraph.add(enode.clone());
        origins.push((
            enode,
            Origin {
                name: node.name.clone(),
                values: node.outputs.iter().map(|v| v.name.clone()).collect(),
            },
        ));
        if node.outputs.len() == 1 || matches!(node.op, Op::Input | Op::Const(_)) {
            ids.insert(at(0), class);
        } else {
            for i in 0..node.outputs.len() {
                let projection = egraph.add(Spark::Opaque(lang::output_symbol(i), vec![class]));
                ids.insert(at(i), projection);
            }
        }
    }
    let roots: Vec<Id> = graph
        .outputs
        .iter()
        .map(|v| {
            ids.get(v)
                .copied()
                .ok_or_else(|| PassError::Graph("a graph output refers to a missing value".into()))
        })
        .collect::<Result<_, _>>()?;
    egraph.analysis.outputs = roots.clone();
    egraph.rebuild();
    Ok((egraph, roots, origins))
}

/// What a class became in the rebuilt graph.
#[derive(Clone, Copy)]
enum Built {
    Value(ValueRef),
    Tuple(NodeId),
    Leaf,
    Omitted,
}

/// Builds the graph the extraction chose, reusing the imported names of the nodes it kept.
fn from_egraph(
    egraph: &EGraph<Spark, Types>,
    choice: &HashMap<Id, Spark>,
    original: &Graph,
    roots: &[Id],
    origins: &[(Spark, Origin)],
) -> Result<Graph, PassError> {
    let mut graph = Graph::new(original.name.clone());
    let canonical = |n: &Spark| n.clone().map_children(|c| egraph.find(c));
    let names: HashMap<Spark, &Origin> = origins.iter().map(|(n, o)| (canonical(n), o)).collect();
    let mut provenance: HashMap<(Id, String), Vec<String>> = HashMap::new();
    for applied in egraph.analysis.applied.iter().filter(|a| a.builds) {
        let key = (egraph.find(applied.class), applied.head.clone());
        let rules = provenance.entry(key).or_default();
        if !rules.contains(&applied.rule) {
            rules.push(applied.rule.clone());
        }
    }
    let mut used: HashSet<String> = HashSet::new();
    let fresh = |base: &str, used: &mut HashSet<String>| -> String {
        let mut n = used.len();
        loop {
            let candidate = format!("{base}_{n}");
            if used.insert(candidate.clone()) {
                return candidate;
            }
            n += 1;
        }
    };
    let mut built: HashMap<Id, Built> = HashMap::new();
    for (i, &input) in original.inputs.iter().enumerate() {
        let node = original.node(input);
        let v = graph.add_input(&node.name, node.outputs[0].ty.clone());
        used.insert(node.name.clone());
        if let Some(class) = egraph.lookup(Spark::Opaque(format!("in{i}").into(), Vec::new())) {
            built.insert(egraph.find(class), Built::Value(v));
        }
    }
    let lookup_data = |id: Id| egraph[id].data.clone();
    let mut stack: Vec<(Id, bool)> = roots
        .iter()
        .rev()
        .map(|&r| (egraph.find(r), false))
        .collect();
    while let Some((class, expanded)) = stack.pop() {
        if built.contains_key(&class) {
            continue;
        }
        let node = choice.get(&class).ok_or_else(|| {
            PassError::Graph(format!("extraction chose nothing for e-class {class}"))
        })?;
        if !expanded {
            stack.push((class, true));
            for &child in node.children().iter().rev() {
                let child = egraph.find(child);
                if !built.contains_key(&child) {
                    stack.push((child, false));
                }
            }
            continue;
        }
        let result = match node {
            Spark::Opaque(symbol, children)
                if children.is_empty()
                    && !matches!(egraph.analysis.table.get(*symbol), Some(Entry::Op(..))) =>
            {
                match egraph.analysis.table.get(*symbol) {
                    Some(Entry::Const(tensor)) => {
                        let name = names
                            .get(&canonical(node))
                            .and_then(|o| o.values.first().cloned())
                            .filter(|n| !used.contains(n))
                            .unwrap_or_else(|| fresh("const", &mut used));
                        used.insert(name.clone());
                        Built::Value(graph.add_const(&name, tensor.clone()))
                    }
                    Some(_) => {
                        return Err(PassError::Graph(format!(
                            "e-class {class} is an input the graph does not declare"
                        )))
                    }
                    None if symbol.as_str() == lang::NONE => Built::Omitted,
                    None => Built::Leaf,
                }
            }
            Spark::Opaque(symbol, children) if lang::output_index(*symbol).is_some() => {
                let i = lang::output_index(*symbol).unwrap_or_default();
                match built.get(&egraph.find(children[0])) {
                    Some(Built::Tuple(node)) => Built::Value(ValueRef {
                        node: *node,
                        output: i,
                    }),
                    _ => {
                        return Err(PassError::Graph(format!(
                            "e-class {class} projects a non-tuple"
                        )))
                    }
                }
            }
            _ => {
                let (op, inputs) =
                    to_ir(&egraph.analysis.table, node, &lookup_data).ok_or_else(|| {
                        PassError::Graph(format!("e-class {class} holds a node with no IR op"))
                    })?;
                let refs: Vec<Option<ValueRef>> = inputs
                    .iter()
                    .map(|i| match i.map(|i| built.get(&egraph.find(i)).copied()) {
                        None | Some(Some(Built::Omitted)) => Ok(None),
                        Some(Some(Built::Value(v))) => Ok(Some(v)),
                        Some(_) => Err(PassError::Graph(format!(
                            "e-class {class} reads a value that was not rebuilt"
                        ))),
                    })
                    .collect::<Result<_, _>>()?;
                let data = &egraph[class].data;
                let count = match node {
                    Spark::Opaque(symbol, _) => match egraph.analysis.table.get(*symbol) {
                        Some(Entry::Op(_, n)) => *n,
                        _ => 1,
                    },
                    _ => 1,
                };
                let origin = names.get(&canonical(node));
                let name = origin
                    .map(|o| o.name.clone())
                    .filter(|n| !used.contains(n))
                    .unwrap_or_else(|| fresh(&op.name().to_lowercase(), &mut used));
                used.insert(name.clone());
                let outputs: Vec<sparkc_ir::Value> = (0..count)
                    .map(|i| {
                        let value_name = origin
                            .and_then(|o| o.values.get(i).cloned())
                            .filter(|n| !n.is_empty() && !used.contains(n))
                            .unwrap_or_else(|| fresh(&name, &mut used));
                        used.insert(value_name.clone());
                        let mut value =
                            data.outputs
                                .get(i)
                                .cloned()
                                .unwrap_or_else(|| sparkc_ir::Value {
                                    name: String::new(),
                                    ty: sparkc_ir::ValueType::Tensor(sparkc_ir::TensorType {
                                        dtype: sparkc_ir::DType::F32,
                                        shape: None,
                                    }),
                                    known: None,
                                });
                        value.name = value_name;
                        value
                    })
                    .collect();
                let id = graph.add_node(name, op, &refs, outputs);
                let head = node.to_string();
                if let Some(rules) = provenance.get(&(class, head)) {
                    graph.dag[id].rules = rules.clone();
                }
                if count == 1 {
                    Built::Value(ValueRef {
                        node: id,
                        output: 0,
                    })
                } else {
                    Built::Tuple(id)
                }
            }
        };
        built.insert(class, result);
    }
    for (i, (&root, original_output)) in roots.iter().zip(&original.outputs).enumerate() {
        let want = original.value(*original_output).name.clone();
        let Some(Built::Value(v)) = built.get(&egraph.find(root)).copied() else {
            return Err(PassError::Graph(format!(
                "graph output {i} was not rebuilt"
            )));
        };
        let is_input = matches!(graph.node(v.node).op, Op::Input);
        let taken = graph.outputs.contains(&v) || is_input;
        let current = graph.value(v).name.clone();
        let name_free = !graph
            .dag
            .node_weights()
            .any(|n| n.outputs.iter().any(|o| o.name == want));
        if current == want && !taken {
            graph.outputs.push(v);
        } else if !taken && name_free {
            graph.dag[v.node].outputs[v.output].name = want;
            graph.outputs.push(v);
        } else {
            let mut value = graph.value(v).clone();
            value.name = if name_free {
                want.clone()
            } else {
                fresh(&want, &mut used)
            };
            let id = graph.add_node(
                format!("{want}_identity"),
                Op::Unary(sparkc_ir::op::Unary::Identity),
                &[Some(v)],
                vec![value],
            );
            graph.outputs.push(ValueRef {
                node: id,
                output: 0,
            });
        }
    }
    sparkc_ir::infer_graph(&mut graph)?;
    Ok(graph)
}

#[cfg(test)]
mod tests;

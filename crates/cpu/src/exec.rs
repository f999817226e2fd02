//! The executor: a liveness plan over a graph's topological order, and the loop that runs it.

use crate::array::Array;
use crate::fuse;
use crate::ops;
use crate::value::Value;
use sparkc_ir::{Dim, Graph, IrError, NodeId, Op, ValueRef, ValueType};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use thiserror::Error;

/// An error while running a graph.
#[derive(Debug, Error)]
pub enum ExecError {
    /// One node failed: its name, op and what went wrong.
    #[error("node '{node}' ({op}): {message}")]
    Node {
        /// The node's name.
        node: String,
        /// The op's name.
        op: String,
        /// What went wrong.
        message: String,
    },
    /// The inputs given do not match what the graph expects.
    #[error("{0}")]
    Input(String),
    /// The graph itself is malformed.
    #[error(transparent)]
    Ir(#[from] IrError),
}

static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();

/// Sets the number of worker threads (default: one per core). Takes effect only before the
/// first run in the process; returns false when it is too late.
pub fn set_threads(threads: usize) -> bool {
    let mut set = false;
    POOL.get_or_init(|| {
        set = true;
        build_pool(threads)
    });
    set
}

fn build_pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("sparkc-cpu-{i}"))
        .build()
        .unwrap_or_else(|_| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .expect("a one-thread pool")
        })
}

/// The number of worker threads runs use.
pub fn threads() -> usize {
    pool().current_num_threads()
}

/// The executor's thread pool. A whole run executes on one of its workers, so the others are
/// woken at most once per op rather than the caller and a worker both being woken.
fn pool() -> &'static rayon::ThreadPool {
    POOL.get_or_init(|| build_pool(0))
}

/// Where a step reads one input from.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// A constant, unpacked once when the executor was built.
    Const(usize),
    /// A value computed during the run (or a graph input).
    Slot(usize),
}

/// What a step runs.
#[derive(Clone, Copy)]
enum Work {
    /// One node.
    Node,
    /// A fused elementwise region (index into the executor's regions), rooted at the step's node.
    Fused(usize),
}

/// One node (or fused region) to run, with its liveness facts.
struct Step {
    node: NodeId,
    work: Work,
    inputs: Vec<Option<Source>>,
    /// Per input: the value dies here and no other input of this node reads it, so the op may
    /// take its buffer.
    movable: Vec<bool>,
    outputs: Vec<usize>,
    /// Slots whose last reader is this step (freed after it runs).
    frees: Vec<usize>,
}

/// Time spent in one kind of op.
#[derive(Clone, Debug, Default)]
pub struct OpTiming {
    /// Number of nodes run.
    pub count: usize,
    /// Total time.
    pub total: Duration,
}

/// Time spent in one node, or in one fused region under its last node's name.
#[derive(Clone, Debug, Default)]
pub struct NodeTiming {
    /// Node name.
    pub name: String,
    /// What it runs, as in the per-op table.
    pub op: String,
    /// Its first output, as `a tensor f32[1, 64, 80, 80]`.
    pub output: String,
    /// Number of runs.
    pub count: usize,
    /// Total time.
    pub total: Duration,
}

/// Per-op and per-node timings gathered over one or more runs.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    /// Timing per op name.
    pub ops: BTreeMap<String, OpTiming>,
    /// Timing per node, in execution order.
    pub nodes: Vec<NodeTiming>,
}

/// A graph prepared for repeated execution on the CPU.
pub struct Executor {
    graph: Graph,
    steps: Vec<Step>,
    consts: Vec<Value>,
    slot_count: usize,
    input_slots: Vec<usize>,
    outputs: Vec<Source>,
    subgraphs: HashMap<NodeId, Vec<Executor>>,
    regions: Vec<fuse::Region>,
}

impl Executor {
    /// Prepares `graph`: topological order, constants, the liveness plan and every subgraph.
    pub fn new(graph: &Graph) -> Result<Executor, ExecError> {
        let graph = graph.clone();
        let order = graph.topo_order()?;
        let mut sources: HashMap<ValueRef, Source> = HashMap::new();
        let mut consts = Vec::new();
        let mut slot_count = 0;
        let mut subgraphs = HashMap::new();
        for &id in &order {
            let node = graph.node(id);
            match &node.op {
                Op::Const(tensor) => {
                    sources.insert(
                        ValueRef {
                            node: id,
                            output: 0,
                        },
                        Source::Const(consts.len()),
                    );
                    consts.push(Value::Tensor(Array::from_tensor(tensor)));
                }
                _ => {
                    for output in 0..node.outputs.len() {
                        sources.insert(ValueRef { node: id, output }, Source::Slot(slot_count));
                        slot_count += 1;
                    }
                }
            }
            let subs = node.op.subgraphs();
            if !subs.is_empty() {
                let executors = subs
                    .into_iter()
                    .map(|(_, g)| Executor::new(g))
                    .collect::<Result<Vec<_>, _>>()?;
                subgraphs.insert(id, executors);
            }
        }
        let slot_of = |v: &ValueRef| match sources.get(v) {
            Some(Source::Slot(s)) => Some(*s),
            _ => None,
        };
        let outputs: Vec<Source> = graph
            .outputs
            .iter()
            .map(|v| {
                sources.get(v).copied().ok_or_else(|| {
                    ExecError::Input(format!("graph output refers to a missing value {v:?}"))
                })
            })
            .collect::<Result<_, _>>()?;
        let regions = fuse::find_regions(&graph, &order);
        let mut region_of_root: HashMap<NodeId, usize> = HashMap::new();
        let mut interior: std::collections::HashSet<NodeId> = std::collections::HashSet::new();
        for (r, region) in regions.iter().enumerate() {
            if let Some((&root, rest)) = region.nodes.split_last() {
                region_of_root.insert(root, r);
                interior.extend(rest.iter().copied());
            }
        }
        let mut last_use: HashMap<usize, usize> = HashMap::new();
        let mut steps = Vec::new();
        for &id in &order {
            let node = graph.node(id);
            if matches!(node.op, Op::Input | Op::Const(_)) || interior.contains(&id) {
                continue;
            }
            let (work, reads) = match region_of_root.get(&id) {
                Some(&r) => (
                    Work::Fused(r),
                    regions[r].inputs.iter().map(|v| Some(*v)).collect(),
                ),
                None => (Work::Node, graph.inputs_of(id)),
            };
            let inputs: Vec<Option<Source>> = reads
                .iter()
                .map(|v| v.and_then(|v| sources.get(&v).copied()))
                .collect();
            for v in reads.iter().flatten() {
                if let Some(s) = slot_of(v) {
                    last_use.insert(s, steps.len());
                }
            }
            let outputs = (0..node.outputs.len())
                .filter_map(|output| slot_of(&ValueRef { node: id, output }))
                .collect();
            steps.push(Step {
                node: id,
                work,
                inputs,
                movable: Vec::new(),
                outputs,
                frees: Vec::new(),
            });
        }
        let kept: Vec<usize> = outputs
            .iter()
            .filter_map(|s| match s {
                Source::Slot(s) => Some(*s),
                Source::Const(_) => None,
            })
            .collect();
        for (slot, &position) in &last_use {
            if !kept.contains(slot) {
                steps[position].frees.push(*slot);
            }
        }
        for step in &mut steps {
            let slots: Vec<Option<usize>> = step
                .inputs
                .iter()
                .map(|s| match s {
                    Some(Source::Slot(s)) => Some(*s),
                    _ => None,
                })
                .collect();
            step.movable = slots
                .iter()
                .map(|s| match s {
                    Some(s) => {
                        step.frees.contains(s)
                            && slots.iter().filter(|t| *t == &Some(*s)).count() == 1
                    }
                    None => false,
                })
                .collect();
        }
        let input_slots = graph
            .inputs
            .iter()
            .map(|&id| {
                slot_of(&ValueRef {
                    node: id,
                    output: 0,
                })
                .unwrap_or(usize::MAX)
            })
            .collect();
        let mut executor = Executor {
            graph,
            steps,
            consts,
            slot_count,
            input_slots,
            outputs,
            subgraphs,
            regions,
        };
        executor.fold_constant_steps();
        Ok(executor)
    }

    /// Runs now, once, every node whose inputs are all constants and whose declared results are
    /// no larger than its largest input (a weight transposed or reshaped, say): runs read its
    /// results as constants. Constants nothing reads any more are dropped.
    fn fold_constant_steps(&mut self) {
        let mut folded: HashMap<usize, usize> = HashMap::new();
        let as_const = |source: Source, folded: &HashMap<usize, usize>| match source {
            Source::Slot(s) => folded.get(&s).map_or(source, |&c| Source::Const(c)),
            other => other,
        };
        let mut kept = Vec::with_capacity(self.steps.len());
        for mut step in std::mem::take(&mut self.steps) {
            for input in step.inputs.iter_mut().flatten() {
                *input = as_const(*input, &folded);
            }
            match self.constant_results(&step) {
                Some(values) => {
                    for (&slot, value) in step.outputs.iter().zip(values) {
                        folded.insert(slot, self.consts.len());
                        self.consts.push(value);
                    }
                }
                None => kept.push(step),
            }
        }
        self.steps = kept;
        for output in &mut self.outputs {
            *output = as_const(*output, &folded);
        }
        if folded.is_empty() {
            return;
        }
        // Renumber the constants still read.
        let mut renumbered: HashMap<usize, usize> = HashMap::new();
        let reads = self
            .steps
            .iter_mut()
            .flat_map(|s| s.inputs.iter_mut().flatten())
            .chain(self.outputs.iter_mut());
        for source in reads {
            if let Source::Const(c) = source {
                let next = renumbered.len();
                *c = *renumbered.entry(*c).or_insert(next);
            }
        }
        let mut consts: Vec<Option<Value>> = std::mem::take(&mut self.consts)
            .into_iter()
            .map(Some)
            .collect();
        let mut order: Vec<(usize, usize)> = renumbered.into_iter().collect();
        order.sort_by_key(|&(_, new)| new);
        self.consts = order
            .into_iter()
            .filter_map(|(old, _)| consts[old].take())
            .collect();
    }

    /// The results of `step`, computed from constants alone, when it may be folded.
    fn constant_results(&self, step: &Step) -> Option<Vec<Value>> {
        let node = self.graph.node(step.node);
        let all_const = step
            .inputs
            .iter()
            .flatten()
            .all(|s| matches!(s, Source::Const(_)));
        let foldable = matches!(step.work, Work::Node)
            && all_const
            && step.inputs.iter().flatten().next().is_some()
            && step.outputs.len() == node.outputs.len()
            && !matches!(node.op, Op::Dropout { .. })
            && node.op.subgraphs().is_empty();
        if !foldable {
            return None;
        }
        // Bits of each declared output; a node whose output sizes are not known is left to run.
        let declared = node
            .outputs
            .iter()
            .map(|v| {
                let t = v.ty.as_tensor()?;
                let dims = t.shape.as_ref()?;
                dims.iter().try_fold(t.dtype.bits(), |bits, d| {
                    usize::try_from(d.as_const()?).ok().map(|d| bits * d)
                })
            })
            .collect::<Option<Vec<usize>>>()?;
        let args: Vec<Option<ops::Arg>> = step
            .inputs
            .iter()
            .map(|s| match s {
                Some(Source::Const(c)) => Some(ops::Arg::Borrowed(&self.consts[*c])),
                _ => None,
            })
            .collect();
        let largest = args
            .iter()
            .flatten()
            .map(|a| match a.value() {
                Value::Tensor(t) => Some(t.len() * t.dtype().bits()),
                _ => None,
            })
            .max()
            .flatten()?;
        if declared.iter().any(|&bits| bits > largest) {
            return None;
        }
        let run =
            std::panic::AssertUnwindSafe(|| ops::run(self, step.node, node, ops::Args::new(args)));
        let results = std::panic::catch_unwind(run).ok()?.ok()?;
        (results.len() == step.outputs.len()).then_some(results)
    }

    /// The graph this executor runs.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Names and declared types of the graph's inputs, in order.
    pub fn inputs(&self) -> Vec<(String, ValueType)> {
        self.graph
            .inputs
            .iter()
            .map(|&id| {
                let value = &self.graph.node(id).outputs[0];
                (value.name.clone(), value.ty.clone())
            })
            .collect()
    }

    /// Names of the graph's outputs, in order.
    pub fn output_names(&self) -> Vec<String> {
        self.graph
            .outputs
            .iter()
            .map(|&v| self.graph.value(v).name.clone())
            .collect()
    }

    /// The subgraph executors of a node (`If`: then, else; `Loop`/`Scan`: body).
    pub(crate) fn subgraphs(&self, id: NodeId) -> &[Executor] {
        self.subgraphs.get(&id).map_or(&[], Vec::as_slice)
    }

    /// Checks inputs against the declared types: count, element type, rank and static dims,
    /// with each symbolic dim bound consistently.
    pub fn check_inputs(&self, inputs: &[Value]) -> Result<(), ExecError> {
        let expected = self.inputs();
        let listing = || {
            expected
                .iter()
                .map(|(name, ty)| format!("{name}: {ty}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if inputs.len() != expected.len() {
            return Err(ExecError::Input(format!(
                "the model takes {} inputs ({}), given {}",
                expected.len(),
                listing(),
                inputs.len()
            )));
        }
        let mut symbols: HashMap<String, usize> = HashMap::new();
        for ((name, ty), value) in expected.iter().zip(inputs) {
            let (ValueType::Tensor(t), Value::Tensor(a)) = (ty, value) else {
                continue;
            };
            let mismatch = || {
                ExecError::Input(format!(
                    "input '{name}' must be {ty}, given {}{:?} (the model takes {})",
                    a.dtype(),
                    a.shape,
                    listing()
                ))
            };
            if t.dtype != a.dtype() {
                return Err(mismatch());
            }
            let Some(dims) = &t.shape else { continue };
            if dims.len() != a.rank() {
                return Err(mismatch());
            }
            for (dim, &size) in dims.iter().zip(&a.shape) {
                if let Some(c) = dim.as_const() {
                    if c as usize != size {
                        return Err(mismatch());
                    }
                } else if let Some(symbol) = symbol_name(dim) {
                    if *symbols.entry(symbol).or_insert(size) != size {
                        return Err(mismatch());
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs the graph on inputs given in the graph's input order, after checking them.
    pub fn run(&self, inputs: Vec<Value>) -> Result<Vec<Value>, ExecError> {
        self.check_inputs(&inputs)?;
        self.execute(inputs, None)
    }

    /// Runs the graph, adding the time spent per op to `profile`.
    pub fn run_profiled(
        &self,
        inputs: Vec<Value>,
        profile: &mut Profile,
    ) -> Result<Vec<Value>, ExecError> {
        self.check_inputs(&inputs)?;
        self.execute(inputs, Some(profile))
    }

    /// Runs a subgraph on values from its parent (whose types were inferred, not declared).
    pub(crate) fn run_nested(&self, inputs: Vec<Value>) -> Result<Vec<Value>, ExecError> {
        self.execute(inputs, None)
    }

    fn execute(
        &self,
        inputs: Vec<Value>,
        profile: Option<&mut Profile>,
    ) -> Result<Vec<Value>, ExecError> {
        if rayon::current_thread_index().is_some() {
            return self.execute_here(inputs, profile);
        }
        pool().install(|| {
            // The other workers spin (running any parallel work that appears) for the length of
            // the run, so an op's parallel part starts at once instead of waiting for a wake-up.
            let running = AtomicBool::new(true);
            let main = rayon::current_thread_index();
            rayon::scope(|scope| {
                for _ in 1..rayon::current_num_threads() {
                    scope.spawn(|_| {
                        if rayon::current_thread_index() == main {
                            return;
                        }
                        while running.load(Ordering::Acquire) {
                            if rayon::yield_now() != Some(rayon::Yield::Executed) {
                                std::hint::spin_loop();
                            }
                        }
                    });
                }
                let result = self.execute_here(inputs, profile);
                running.store(false, Ordering::Release);
                result
            })
        })
    }

    fn execute_here(
        &self,
        inputs: Vec<Value>,
        mut profile: Option<&mut Profile>,
    ) -> Result<Vec<Value>, ExecError> {
        if inputs.len() != self.input_slots.len() {
            return Err(ExecError::Input(format!(
                "graph '{}' takes {} inputs, given {}",
                self.graph.name,
                self.input_slots.len(),
                inputs.len()
            )));
        }
        let mut slots: Vec<Option<Value>> = vec![None; self.slot_count];
        for (&slot, value) in self.input_slots.iter().zip(inputs) {
            if slot != usize::MAX {
                slots[slot] = Some(value);
            }
        }
        for (index, step) in self.steps.iter().enumerate() {
            let node = self.graph.node(step.node);
            let started = profile.as_ref().map(|_| Instant::now());
            let mut owned: Vec<Option<Value>> = step
                .inputs
                .iter()
                .zip(&step.movable)
                .map(|(source, &movable)| match (source, movable) {
                    (Some(Source::Slot(s)), true) => slots[*s].take(),
                    _ => None,
                })
                .collect();
            let error = |message: String| ExecError::Node {
                node: node.name.clone(),
                op: node.op.name(),
                message,
            };
            let mut args = Vec::with_capacity(step.inputs.len());
            for (i, source) in step.inputs.iter().enumerate() {
                args.push(match (owned[i].take(), source) {
                    (Some(value), _) => Some(ops::Arg::Owned(value)),
                    (None, Some(Source::Const(c))) => Some(ops::Arg::Borrowed(&self.consts[*c])),
                    (None, Some(Source::Slot(s))) => match &slots[*s] {
                        Some(value) => Some(ops::Arg::Borrowed(value)),
                        None => return Err(error(format!("input {i} has no value"))),
                    },
                    (None, None) => None,
                });
            }
            let results = match step.work {
                Work::Node => {
                    // An op that panics on input its checks missed is an error naming the node,
                    // not a crash of the embedding application.
                    let run = std::panic::AssertUnwindSafe(|| {
                        ops::run(self, step.node, node, ops::Args::new(args))
                    });
                    std::panic::catch_unwind(run)
                        .unwrap_or_else(|panic| {
                            let what = panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_default();
                            Err(format!("internal error: {what}"))
                        })
                        .map_err(error)?
                }
                Work::Fused(r) => {
                    let args = args
                        .into_iter()
                        .map(|a| a.ok_or("a fused input is missing".to_string()))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(error)?;
                    vec![fuse::run(&self.regions[r], args).map_err(error)?]
                }
            };
            if results.len() < step.outputs.len() {
                return Err(error(format!(
                    "produced {} outputs, the graph expects {}",
                    results.len(),
                    step.outputs.len()
                )));
            }
            for (&slot, value) in step.outputs.iter().zip(results) {
                slots[slot] = Some(value);
            }
            if let (Some(profile), Some(started)) = (profile.as_deref_mut(), started) {
                let elapsed = started.elapsed();
                let label = match step.work {
                    Work::Node => match &node.op {
                        Op::Fused(fused) => format!("Fused({})", fused.label()),
                        op => op.name(),
                    },
                    Work::Fused(r) => self.regions[r].label(&self.graph),
                };
                if profile.nodes.len() <= index {
                    let output = step.outputs.first().and_then(|&s| slots[s].as_ref());
                    profile.nodes.push(NodeTiming {
                        name: node.name.clone(),
                        op: label.clone(),
                        output: output.map_or_else(String::new, |v| v.to_string()),
                        ..NodeTiming::default()
                    });
                }
                let timing = profile.ops.entry(label).or_default();
                timing.count += 1;
                timing.total += elapsed;
                if let Some(node_timing) = profile.nodes.get_mut(index) {
                    node_timing.count += 1;
                    node_timing.total += elapsed;
                }
            }
            for &slot in &step.frees {
                slots[slot] = None;
            }
        }
        self.outputs
            .iter()
            .map(|source| match source {
                Source::Const(c) => Ok(self.consts[*c].clone()),
                Source::Slot(s) => slots[*s].take().ok_or_else(|| {
                    ExecError::Input(format!("graph output in slot {s} was never computed"))
                }),
            })
            .collect()
    }
}

fn symbol_name(dim: &Dim) -> Option<String> {
    let text = dim.to_string();
    let mut chars = text.chars();
    let first = chars.next()?;
    (first.is_alphabetic() || first == '_')
        .then_some(())
        .filter(|_| chars.all(|c| c.is_alphanumeric() || c == '_'))
        .map(|_| text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::array::Data;
    use sparkc_ir::op::{Binary, Unary};
    use sparkc_ir::{DType, TensorType, Value as IrValue};

    fn f32_value(name: &str, dims: &[i64]) -> IrValue {
        IrValue {
            name: name.into(),
            ty: ValueType::Tensor(TensorType::new(
                DType::F32,
                dims.iter().map(|&d| Dim::known(d)).collect(),
            )),
            known: None,
        }
    }

    /// `y = exp(relu(x)) + x`, `z = relu(x) * 2`: relu's value has two readers.
    fn graph() -> Graph {
        let mut g = Graph::new("t");
        let x = g.add_input("x", f32_value("x", &[2, 3]).ty);
        let two = g.add_const("two", Array::f32(vec![], vec![2.0]).to_tensor());
        let node = |g: &mut Graph, name: &str, op: Op, inputs: &[ValueRef]| {
            let inputs: Vec<Option<ValueRef>> = inputs.iter().map(|&v| Some(v)).collect();
            ValueRef {
                node: g.add_node(name.into(), op, &inputs, vec![f32_value(name, &[2, 3])]),
                output: 0,
            }
        };
        let r = node(&mut g, "relu", Op::Unary(Unary::Relu), &[x]);
        let e = node(&mut g, "exp", Op::Unary(Unary::Exp), &[r]);
        let y = node(&mut g, "y", Op::Binary(Binary::Add), &[e, x]);
        let z = node(&mut g, "z", Op::Binary(Binary::Mul), &[r, two]);
        g.outputs = vec![y, z];
        g
    }

    #[test]
    fn runs_with_fusion_and_liveness() {
        let exec = Executor::new(&graph()).unwrap();
        // relu has two readers, so only exp+y fuse; every intermediate is freed after its last reader.
        assert_eq!(exec.regions.len(), 1);
        assert_eq!(exec.regions[0].label(exec.graph()), "Fused(Exp+Add)");
        let freed: usize = exec.steps.iter().map(|s| s.frees.len()).sum();
        assert_eq!(
            freed, 2,
            "x and relu's value die once read for the last time"
        );
        let xs = vec![-1.0f32, 0.0, 1.0, 2.0, -3.0, 0.5];
        let outputs = exec
            .run(vec![Value::Tensor(Array::f32(vec![2, 3], xs.clone()))])
            .unwrap();
        let y: Vec<f32> = xs.iter().map(|&v| v.max(0.0).exp() + v).collect();
        let z: Vec<f32> = xs.iter().map(|&v| v.max(0.0) * 2.0).collect();
        assert_eq!(outputs[0], Value::Tensor(Array::f32(vec![2, 3], y)));
        assert_eq!(outputs[1], Value::Tensor(Array::f32(vec![2, 3], z)));
    }

    #[test]
    fn a_transposed_weight_is_computed_once_and_a_growing_one_every_run() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", f32_value("x", &[1, 2]).ty);
        let w = g.add_const(
            "w",
            Array::f32(vec![3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).to_tensor(),
        );
        let wt = ValueRef {
            node: g.add_node(
                "wt".into(),
                Op::Transpose { perm: vec![1, 0] },
                &[Some(w)],
                vec![f32_value("wt", &[2, 3])],
            ),
            output: 0,
        };
        let y = ValueRef {
            node: g.add_node(
                "y".into(),
                Op::MatMul,
                &[Some(x), Some(wt)],
                vec![f32_value("y", &[1, 3])],
            ),
            output: 0,
        };
        let repeats = g.add_const("repeats", Array::i64(vec![2], vec![2, 1]).to_tensor());
        let tiled = ValueRef {
            node: g.add_node(
                "tiled".into(),
                Op::Tile,
                &[Some(w), Some(repeats)],
                vec![f32_value("tiled", &[6, 2])],
            ),
            output: 0,
        };
        g.outputs = vec![y, tiled];
        let exec = Executor::new(&g).unwrap();
        let mut run: Vec<String> = exec
            .steps
            .iter()
            .map(|s| exec.graph.node(s.node).name.clone())
            .collect();
        run.sort();
        assert_eq!(
            run,
            ["tiled", "y"],
            "the transpose ran once, when the executor was built"
        );
        assert_eq!(
            exec.consts.len(),
            3,
            "w (read by the Tile), repeats and the transposed w"
        );
        let outputs = exec
            .run(vec![Value::Tensor(Array::f32(vec![1, 2], vec![1.0, 10.0]))])
            .unwrap();
        assert_eq!(
            outputs[0],
            Value::Tensor(Array::f32(vec![1, 3], vec![21.0, 43.0, 65.0]))
        );
        assert_eq!(
            outputs[1],
            Value::Tensor(Array::f32(
                vec![6, 2],
                [1.0, 2.0, 3.0, 4.0, 5.0, 6.0].repeat(2)
            ))
        );
    }

    #[test]
    fn absurd_sizes_from_data_are_errors() {
        let mut g = Graph::new("t");
        let shape_ty = ValueType::Tensor(TensorType::new(DType::I64, vec![Dim::known(2)]));
        let shape = g.add_input("shape", shape_ty);
        let value = Array::f32(vec![1], vec![0.0]).to_tensor();
        let out = IrValue {
            name: "y".into(),
            ty: ValueType::Tensor(TensorType {
                dtype: DType::F32,
                shape: None,
            }),
            known: None,
        };
        let id = g.add_node(
            "fill".into(),
            Op::ConstantOfShape { value },
            &[Some(shape)],
            vec![out],
        );
        g.outputs = vec![ValueRef {
            node: id,
            output: 0,
        }];
        let exec = Executor::new(&g).unwrap();
        let huge = Value::Tensor(Array::i64(vec![2], vec![1 << 20, 1 << 20]));
        let message = exec.run(vec![huge]).unwrap_err().to_string();
        assert!(
            message.contains("node 'fill' (ConstantOfShape)")
                && message.contains("over 2^34 elements"),
            "{message}"
        );
    }

    #[test]
    fn checks_inputs_against_declared_types() {
        let exec = Executor::new(&graph()).unwrap();
        let wrong_shape = Value::Tensor(Array::f32(vec![3, 2], vec![0.0; 6]));
        let message = exec.check_inputs(&[wrong_shape]).unwrap_err().to_string();
        assert!(
            message.contains("input 'x' must be f32[2,3], given f32[3, 2]"),
            "{message}"
        );
        let wrong_type = Value::Tensor(Array::new(vec![2, 3], Data::I64(vec![0; 6])));
        assert!(exec.check_inputs(&[wrong_type]).is_err());
        assert!(exec.run(vec![]).is_err());
    }
}

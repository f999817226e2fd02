//! The pass manager: runs passes in order, verifies the graph after each (in debug builds and
//! tests), and times them.

use sparkc_ir::{verify, Graph, IrError};
use std::time::{Duration, Instant};

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// A node the pass could not handle.
    #[error("node '{node}' ({op}): {message}")]
    Node {
        /// The node's name.
        node: String,
        /// Its op.
        op: String,
        /// What went wrong.
        message: String,
    },
    /// A problem with the graph as a whole.
    #[error("{0}")]
    Graph(String),
    /// An IR error (inference, a cycle).
    #[error(transparent)]
    Ir(#[from] IrError),
    /// The graph a pass left does not verify: a bug in that pass.
    #[error("the graph after pass '{pass}' does not verify: {error}")]
    Verify {
        /// The pass.
        pass: String,
        /// The verifier's complaint.
        error: IrError,
    },
    /// A pass name that is not in the pipeline.
    #[error("no pass is named '{0}' (the pipeline runs: {1})")]
    UnknownPass(String, String),
    /// A rule file that does not parse.
    #[error(transparent)]
    Rules(#[from] crate::egraph::rules::RuleError),
}

/// A graph-to-graph transformation.
pub trait Pass {
    /// The pass's name, as `--after` takes it.
    fn name(&self) -> &'static str;
    /// Rewrites `graph`, returning a one-line summary of what it did.
    fn run(&mut self, graph: &mut Graph) -> Result<String, PassError>;
}

/// What one pass did.
#[derive(Clone, Debug)]
pub struct PassReport {
    /// The pass.
    pub name: &'static str,
    /// Time it took (verification excluded).
    pub time: Duration,
    /// Nodes before.
    pub nodes_before: usize,
    /// Nodes after.
    pub nodes_after: usize,
    /// The pass's own summary.
    pub summary: String,
}

/// An ordered list of passes.
pub struct PassManager {
    passes: Vec<Box<dyn Pass>>,
    verify: bool,
}

impl PassManager {
    /// An empty pipeline that verifies after each pass in debug builds.
    pub fn new() -> PassManager {
        PassManager {
            passes: Vec::new(),
            verify: cfg!(debug_assertions),
        }
    }

    /// Adds a pass at the end.
    pub fn then(mut self, pass: impl Pass + 'static) -> PassManager {
        self.passes.push(Box::new(pass));
        self
    }

    /// Adds every pass of `other` at the end.
    pub fn append(mut self, other: PassManager) -> PassManager {
        self.passes.extend(other.passes);
        self
    }

    /// Verifies the graph after every pass (on in debug builds), or not.
    pub fn verify(mut self, on: bool) -> PassManager {
        self.verify = on;
        self
    }

    /// The names of the passes, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.passes.iter().map(|p| p.name()).collect()
    }

    /// Runs every pass.
    pub fn run(&mut self, graph: &mut Graph) -> Result<Vec<PassReport>, PassError> {
        self.run_until(graph, None)
    }

    /// Runs the passes up to and including the first one named `last` (all of them when
    /// `None`).
    pub fn run_until(
        &mut self,
        graph: &mut Graph,
        last: Option<&str>,
    ) -> Result<Vec<PassReport>, PassError> {
        if let Some(last) = last {
            if !self.names().contains(&last) {
                return Err(PassError::UnknownPass(
                    last.to_string(),
                    self.names().join(", "),
                ));
            }
        }
        let mut reports = Vec::new();
        for pass in &mut self.passes {
            let nodes_before = graph.node_count();
            let start = Instant::now();
            let summary = run_nested(pass.as_mut(), graph)?;
            let time = start.elapsed();
            if self.verify {
                verify(graph).map_err(|error| PassError::Verify {
                    pass: pass.name().to_string(),
                    error,
                })?;
            }
            reports.push(PassReport {
                name: pass.name(),
                time,
                nodes_before,
                nodes_after: graph.node_count(),
                summary,
            });
            if Some(pass.name()) == last {
                break;
            }
        }
        Ok(reports)
    }
}

/// Runs `pass` on the subgraphs of `graph` (inner ones first), then on `graph` itself; the
/// summary is the outer graph's.
fn run_nested(pass: &mut dyn Pass, graph: &mut Graph) -> Result<String, PassError> {
    let ids: Vec<_> = graph.dag.node_indices().collect();
    let mut changed = false;
    for id in ids {
        for subgraph in graph.dag[id].op.subgraphs_mut() {
            run_nested(pass, subgraph)?;
            changed = true;
        }
    }
    if changed {
        // A subgraph's outputs may now be typed more precisely.
        sparkc_ir::infer_graph(graph)?;
    }
    pass.run(graph)
}

impl Default for PassManager {
    fn default() -> PassManager {
        PassManager::new()
    }
}

//! A check of generated PTX that every block barrier is reached by all threads of the block
//! or by none: no `bar.sync` may depend on a branch whose condition differs between threads.
//!
//! `ptxas` accepts such code and the host build (one thread) cannot show it, but on a GPU it
//! hangs or corrupts shared memory. The analysis is conservative: values derived from the
//! thread's index, from loads at thread-dependent addresses, from shuffles, atomics or
//! tensor-core fragments count as divergent; kernel parameters, the block index and loads
//! at uniform addresses count as uniform.

use std::collections::{HashMap, HashSet};

/// A barrier that depends on a divergent branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DivergentBarrier {
    /// The block (label) holding the barrier.
    pub barrier_block: String,
    /// The block (label) ending in the divergent branch.
    pub branch_block: String,
    /// The branch's predicate register.
    pub predicate: String,
}

impl std::fmt::Display for DivergentBarrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a barrier in {} depends on the divergent branch on {} at the end of {}",
            self.barrier_block, self.predicate, self.branch_block
        )
    }
}

/// Special registers whose value differs between the threads of a block.
const THREAD_REGISTERS: [&str; 5] = ["%tid", "%laneid", "%warpid", "%lanemask", "%clock"];

/// One PTX instruction: its guard, opcode and operands (top-level, comma-separated).
struct Instruction {
    guard: Option<String>,
    opcode: String,
    operands: Vec<String>,
}

/// Straight-line code between labels and branches.
#[derive(Default)]
struct Block {
    label: String,
    instructions: Vec<Instruction>,
    successors: Vec<usize>,
}

/// The registers an operand names (`%r12`, `%tid.x`, `%rd3`).
fn registers(operand: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = operand.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let start = i;
            i += 1;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || b"_.$".contains(&bytes[i]))
            {
                i += 1;
            }
            out.push(operand[start..i].to_string());
        } else {
            i += 1;
        }
    }
    out
}

/// Splits operands at top-level commas (not inside `{...}` or `[...]`).
fn split_operands(text: &str) -> Vec<String> {
    let (mut out, mut depth, mut current) = (Vec::new(), 0i32, String::new());
    for c in text.chars() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut current).trim().to_string());
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out
}

/// The statements of the kernel body, labels and instructions in order.
enum Statement {
    Label(String),
    Instruction(Instruction),
}

fn statements(ptx: &str) -> Vec<Statement> {
    let text: String = ptx
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let body = match text.find(".entry") {
        Some(at) => &text[at..],
        None => &text[..],
    };
    // The body starts after the parameter list's closing parenthesis.
    let body = match body.find(')') {
        Some(at) => &body[at + 1..],
        None => body,
    };
    let mut out = Vec::new();
    for raw in body.split(';') {
        let mut rest = raw.trim_start_matches(|c: char| c.is_whitespace() || c == '{' || c == '}');
        // Labels before the statement.
        while let Some(colon) = rest.find(':') {
            let head = rest[..colon].trim();
            let is_label = !head.is_empty()
                && head
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
            if !is_label {
                break;
            }
            out.push(Statement::Label(head.to_string()));
            rest = rest[colon + 1..]
                .trim_start_matches(|c: char| c.is_whitespace() || c == '{' || c == '}');
        }
        let rest = rest.trim();
        if rest.is_empty() || rest.starts_with('.') {
            continue;
        }
        let (guard, rest) = match rest.strip_prefix('@') {
            Some(g) => {
                let end = g.find(char::is_whitespace).unwrap_or(g.len());
                (Some(g[..end].to_string()), g[end..].trim_start())
            }
            None => (None, rest),
        };
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let opcode = rest[..end].to_string();
        let operands = split_operands(&rest[end..]);
        out.push(Statement::Instruction(Instruction {
            guard,
            opcode,
            operands,
        }));
    }
    out
}

/// The opcode without its modifiers (`ld` of `ld.global.f32`).
fn base(opcode: &str) -> &str {
    opcode.split('.').next().unwrap_or(opcode)
}

/// Opcodes that write no register with their first operand.
const WRITE_NOTHING: [&str; 12] = [
    "st", "bar", "barrier", "bra", "ret", "exit", "cp", "red", "prefetch", "fence", "membar",
    "stmatrix",
];

/// Opcodes whose result differs between threads whatever their inputs.
const ALWAYS_DIVERGENT: [&str; 8] = [
    "shfl",
    "atom",
    "mma",
    "ldmatrix",
    "vote",
    "activemask",
    "match",
    "wgmma",
];

/// The registers whose values may differ between threads of a block.
fn divergent_registers(instructions: &[&Instruction]) -> HashSet<String> {
    // Each register-writing instruction as (destinations, sources, divergent whatever its
    // sources), parsed once; then divergence spreads along them until nothing changes.
    let flows: Vec<(Vec<String>, Vec<String>, bool)> = instructions
        .iter()
        .filter(|ins| !WRITE_NOTHING.contains(&base(&ins.opcode)) && !ins.operands.is_empty())
        .map(|ins| {
            let sources = ins.operands[1..]
                .iter()
                .flat_map(|o| registers(o))
                .chain(
                    ins.guard
                        .iter()
                        .map(|g| g.trim_start_matches('!').to_string()),
                )
                .collect();
            let always = ALWAYS_DIVERGENT.contains(&base(&ins.opcode));
            (registers(&ins.operands[0]), sources, always)
        })
        .collect();
    let mut divergent: HashSet<String> = HashSet::new();
    loop {
        let before = divergent.len();
        for (dests, sources, always) in &flows {
            let from_thread = sources.iter().any(|s| {
                divergent.contains(s) || THREAD_REGISTERS.iter().any(|t| s.starts_with(t))
            });
            if *always || from_thread {
                divergent.extend(dests.iter().cloned());
            }
        }
        if divergent.len() == before {
            return divergent;
        }
    }
}

/// The kernel's control-flow graph: blocks in order, with an extra exit block last.
fn blocks(statements: Vec<Statement>) -> Vec<Block> {
    let mut blocks = vec![Block {
        label: "entry".into(),
        ..Block::default()
    }];
    let mut ended = false;
    for s in statements {
        match s {
            Statement::Label(l) => {
                blocks.push(Block {
                    label: l,
                    ..Block::default()
                });
                ended = false;
            }
            Statement::Instruction(ins) => {
                if ended {
                    blocks.push(Block {
                        label: format!("after {}", blocks.len()),
                        ..Block::default()
                    });
                }
                ended =
                    ins.opcode.starts_with("bra") || ins.opcode == "ret" || ins.opcode == "exit";
                if let Some(b) = blocks.last_mut() {
                    b.instructions.push(ins);
                }
            }
        }
    }
    let exit = blocks.len();
    let index: HashMap<String, usize> = blocks
        .iter()
        .enumerate()
        .map(|(i, b)| (b.label.clone(), i))
        .collect();
    for (i, block) in blocks.iter_mut().enumerate() {
        let mut successors = Vec::new();
        let mut falls_through = true;
        if let Some(last) = block.instructions.last() {
            if last.opcode.starts_with("bra") {
                if let Some(target) = last.operands.first().and_then(|t| index.get(t.trim())) {
                    successors.push(*target);
                }
                falls_through = last.guard.is_some();
            } else if last.opcode == "ret" || last.opcode == "exit" {
                successors.push(exit);
                falls_through = last.guard.is_some();
            }
        }
        if falls_through {
            successors.push(if i + 1 < exit { i + 1 } else { exit });
        }
        block.successors = successors;
    }
    blocks.push(Block {
        label: "exit".into(),
        ..Block::default()
    });
    blocks
}

/// Post-dominator sets, `pdom[b][c]` when `c` post-dominates `b`.
fn post_dominators(blocks: &[Block]) -> Vec<Vec<bool>> {
    let n = blocks.len();
    let exit = n - 1;
    let mut pdom = vec![vec![true; n]; n];
    pdom[exit] = (0..n).map(|c| c == exit).collect();
    let mut changed = true;
    while changed {
        changed = false;
        for b in (0..exit).rev() {
            let mut set = vec![true; n];
            let successors = &blocks[b].successors;
            if successors.is_empty() {
                set = vec![false; n];
            }
            for &s in successors {
                for (c, v) in set.iter_mut().enumerate() {
                    *v &= pdom[s][c];
                }
            }
            set[b] = true;
            if set != pdom[b] {
                pdom[b] = set;
                changed = true;
            }
        }
    }
    pdom
}

/// Every barrier of `ptx` (one kernel) that depends on a divergent branch.
pub fn divergent_barriers(ptx: &str) -> Vec<DivergentBarrier> {
    let blocks = blocks(statements(ptx));
    let all: Vec<&Instruction> = blocks.iter().flat_map(|b| &b.instructions).collect();
    let divergent = divergent_registers(&all);
    let pdom = post_dominators(&blocks);
    let has_barrier = |b: &Block| {
        b.instructions
            .iter()
            .any(|i| i.opcode.starts_with("bar.") || i.opcode.starts_with("barrier."))
    };
    let mut found = Vec::new();
    for (b, block) in blocks.iter().enumerate() {
        let Some(last) = block.instructions.last() else {
            continue;
        };
        let Some(predicate) = last.guard.as_ref().map(|g| g.trim_start_matches('!')) else {
            continue;
        };
        if !last.opcode.starts_with("bra") && last.opcode != "ret" {
            continue;
        }
        if !divergent.contains(predicate) {
            continue;
        }
        // The blocks between the branch and the point where all its paths meet again.
        let mut seen = vec![false; blocks.len()];
        let mut stack: Vec<usize> = block.successors.clone();
        while let Some(s) = stack.pop() {
            if seen[s] || (pdom[b][s] && s != b) {
                continue;
            }
            seen[s] = true;
            if has_barrier(&blocks[s]) {
                found.push(DivergentBarrier {
                    barrier_block: blocks[s].label.clone(),
                    branch_block: block.label.clone(),
                    predicate: predicate.to_string(),
                });
            }
            stack.extend(blocks[s].successors.iter().copied());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body of a kernel around `code`, with two parameters.
    fn kernel(code: &str) -> String {
        format!(
            ".visible .entry k(\n\t.param .u64 k_param_0,\n\t.param .u64 k_param_1\n)\n{{\n\t.reg .pred %p<9>;\n\t.reg .b32 %r<40>;\n{code}\n}}\n"
        )
    }

    #[test]
    fn a_barrier_split_between_thread_zero_and_the_rest_is_found() {
        // What LLVM's tail duplication once made of a block reduction: thread 0 stores and
        // waits at one barrier, the other threads at another.
        let ptx = kernel(
            "\tmov.u32 %r1, %tid.x;\n\tsetp.eq.s32 %p6, %r1, 0;\n\t@%p6 bra $L__BB0_9;\n\tbar.sync 0;\n\tbra.uni $L__BB0_10;\n$L__BB0_9:\n\tst.shared.f32 [%r2], %r3;\n\tbar.sync 0;\n$L__BB0_10:\n\tret;",
        );
        let found = divergent_barriers(&ptx);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().all(|f| f.predicate == "%p6"));
    }

    #[test]
    fn the_block_reduction_that_hung_an_h200_is_found() {
        // LLVM 22's PTX for test_globalaveragepool on sm_90a, from before inline PTX calls
        // were made convergent.
        let found = divergent_barriers(include_str!("testdata/split_barrier.ptx"));
        assert!(!found.is_empty());
        println!("{}", found[0]);
    }

    #[test]
    fn a_barrier_after_thread_zero_rejoins_is_accepted() {
        let ptx = kernel(
            "\tmov.u32 %r1, %tid.x;\n\tsetp.ne.s32 %p6, %r1, 0;\n\t@%p6 bra $L__BB0_2;\n\tst.shared.f32 [%r2], %r3;\n$L__BB0_2:\n\tbar.sync 0;\n\tret;",
        );
        assert_eq!(divergent_barriers(&ptx), Vec::new());
    }

    #[test]
    fn a_barrier_in_a_loop_over_blocks_is_accepted_and_over_threads_is_not() {
        // A loop stepping by the grid (uniform) may hold barriers.
        let uniform = kernel(
            "\tmov.u32 %r1, %ctaid.x;\n\tld.param.u32 %r2, [k_param_0];\n$L__BB0_1:\n\tbar.sync 0;\n\tadd.s32 %r1, %r1, %r2;\n\tsetp.lt.s32 %p1, %r1, %r2;\n\t@%p1 bra $L__BB0_1;\n\tret;",
        );
        assert_eq!(divergent_barriers(&uniform), Vec::new());
        // One whose trip count depends on the thread may not.
        let per_thread = kernel(
            "\tmov.u32 %r1, %tid.x;\n\tld.param.u32 %r2, [k_param_0];\n$L__BB0_1:\n\tbar.sync 0;\n\tadd.s32 %r1, %r1, 256;\n\tsetp.lt.s32 %p1, %r1, %r2;\n\t@%p1 bra $L__BB0_1;\n\tret;",
        );
        assert_eq!(divergent_barriers(&per_thread).len(), 1);
    }

    #[test]
    fn loads_are_divergent_only_at_divergent_addresses() {
        // Every thread reads the same shared word: a uniform value.
        let same = kernel(
            "\tld.shared.u32 %r1, [%r30+128];\n\tsetp.eq.s32 %p1, %r1, 0;\n\t@%p1 bra $L__BB0_2;\n\tbar.sync 0;\n$L__BB0_2:\n\tret;",
        );
        assert_eq!(divergent_barriers(&same), Vec::new());
        let own = kernel(
            "\tmov.u32 %r5, %tid.x;\n\tld.shared.u32 %r1, [%r5];\n\tsetp.eq.s32 %p1, %r1, 0;\n\t@%p1 bra $L__BB0_2;\n\tbar.sync 0;\n$L__BB0_2:\n\tret;",
        );
        assert_eq!(divergent_barriers(&own).len(), 1);
    }
}

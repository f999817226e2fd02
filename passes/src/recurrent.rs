//! `LSTM`, `GRU` and `RNN` unrolled over their time steps into products and elementwise ops, which
//! have kernels and fuse: the input's contribution to each gate is one product over the whole
//! sequence (`[T, B, I] × [I, H]`, biases added), and each step adds the hidden state's product
//! and applies the gates, whose elementwise ops the fusion rules put in the product's epilogue.
//! With `sequence_lens` given at run time, each step keeps the state of the sequences that have
//! ended and writes zeros for them, and the reverse direction runs forward over each sequence
//! reversed within its length (`ReverseSequence`), its outputs reversed back. Layers stay as
//! they are when the number of steps is unknown or more than [`MAX_STEPS`] (summed over
//! directions), when an activation is not Sigmoid, Tanh or Relu, or when the input is not
//! `f32`.

use crate::edit::{readers, take_place, Builder};
use crate::manager::{Pass, PassError};
use sparkc_ir::op::{Binary, RnnAttrs, Unary};
use sparkc_ir::{DType, Graph, NodeId, Op, ValueRef};

/// The most time steps (times directions) a layer is unrolled over.
pub const MAX_STEPS: usize = 256;

/// Unrolls every `LSTM`, `GRU` and `RNN` it can.
pub struct UnrollRecurrent;

impl Pass for UnrollRecurrent {
    fn name(&self) -> &'static str {
        "unroll-recurrent"
    }

    fn run(&mut self, graph: &mut Graph) -> Result<String, PassError> {
        let ids: Vec<NodeId> = graph
            .topo_order()?
            .into_iter()
            .filter(|&id| matches!(graph.node(id).op, Op::Lstm(_) | Op::Gru(_) | Op::Rnn(_)))
            .collect();
        let (mut unrolled, mut kept) = (0, 0);
        for id in ids {
            match layer(graph, id)? {
                Some(layer) => {
                    unroll(graph, id, &layer)?;
                    unrolled += 1;
                }
                None => kept += 1,
            }
        }
        if unrolled > 0 {
            sparkc_ir::infer_graph(graph)?;
        }
        Ok(format!(
            "{unrolled} recurrent layer(s) unrolled, {kept} kept"
        ))
    }
}

/// The cell a layer repeats.
#[derive(Clone, Copy, PartialEq)]
enum Cell {
    Lstm,
    Gru,
    Rnn,
}

impl Cell {
    /// Gates per step (rows of `W` per hidden unit).
    fn gates(self) -> usize {
        match self {
            Cell::Lstm => 4,
            Cell::Gru => 3,
            Cell::Rnn => 1,
        }
    }

    /// Activations per direction when the model names none.
    fn default_activations(self) -> &'static [&'static str] {
        match self {
            Cell::Lstm => &["Sigmoid", "Tanh", "Tanh"],
            Cell::Gru => &["Sigmoid", "Tanh"],
            Cell::Rnn => &["Tanh"],
        }
    }
}

/// What an unrolled layer needs to know about the node.
struct Layer {
    cell: Cell,
    attrs: RnnAttrs,
    steps: usize,
    hidden: usize,
    directions: usize,
    /// The activation ops of each direction, in the cell's order.
    activations: Vec<Vec<Unary>>,
    /// `X, W, R, B?, sequence_lens?, initial_h?, initial_c?, P?`.
    inputs: Vec<Option<ValueRef>>,
    /// The sequence lengths, unless absent or a constant that cuts no sequence short.
    lens: Option<ValueRef>,
}

/// The activation op an activation name stands for, among those unrolled.
fn activation(name: &str) -> Option<Unary> {
    match name.to_ascii_lowercase().as_str() {
        "sigmoid" => Some(Unary::Sigmoid),
        "tanh" => Some(Unary::Tanh),
        "relu" => Some(Unary::Relu),
        _ => None,
    }
}

/// The layer at `id`, when it can be unrolled.
fn layer(graph: &Graph, id: NodeId) -> Result<Option<Layer>, PassError> {
    let node = graph.node(id);
    let (cell, attrs) = match &node.op {
        Op::Lstm(a) => (Cell::Lstm, a.clone()),
        Op::Gru(a) => (Cell::Gru, a.clone()),
        Op::Rnn(a) => (Cell::Rnn, a.clone()),
        _ => return Ok(None),
    };
    let inputs = graph.inputs_of(id);
    let Some(x) = inputs.first().copied().flatten() else {
        return Ok(None);
    };
    let Some(x_type) = graph.value(x).ty.as_tensor() else {
        return Ok(None);
    };
    let Some(dims) = x_type.shape.as_ref().filter(|d| d.len() == 3) else {
        return Ok(None);
    };
    let time_axis = if attrs.layout == 1 { 1 } else { 0 };
    let Some(steps) = dims[time_axis].as_const().filter(|&t| t > 0) else {
        return Ok(None);
    };
    let steps = steps as usize;
    let directions = match attrs.direction.as_str() {
        "" | "forward" | "reverse" => 1,
        "bidirectional" => 2,
        _ => return Ok(None),
    };
    let hidden = usize::try_from(attrs.hidden_size).unwrap_or(0);
    let input_forget_ok = cell == Cell::Lstm || !attrs.input_forget;
    if x_type.dtype != DType::F32
        || hidden == 0
        || steps * directions > MAX_STEPS
        || !input_forget_ok
    {
        return Ok(None);
    }
    let lens = inputs.get(4).copied().flatten().filter(|lens| {
        let full = match &graph.node(lens.node).op {
            Op::Const(t) => t
                .to_f64s()
                .is_some_and(|v| v.iter().all(|&l| l == steps as f64)),
            _ => false,
        };
        !full
    });
    let defaults = cell.default_activations();
    let mut activations = Vec::with_capacity(directions);
    for d in 0..directions {
        let mut ops = Vec::with_capacity(defaults.len());
        for (k, default) in defaults.iter().enumerate() {
            let at = d * defaults.len() + k;
            let name = attrs.activations.get(at).map_or(*default, String::as_str);
            let Some(op) = activation(name) else {
                return Ok(None);
            };
            ops.push(op);
        }
        activations.push(ops);
    }
    // Only the outputs the unrolled layer writes: Y, Y_h and (LSTM) Y_c.
    if node.outputs.len() > if cell == Cell::Lstm { 3 } else { 2 } {
        return Ok(None);
    }
    Ok(Some(Layer {
        cell,
        attrs,
        steps,
        hidden,
        directions,
        activations,
        inputs,
        lens,
    }))
}

/// One direction's per-gate operands: the input's contribution at each time step (`[B, H]`,
/// biases added, from one product over the whole sequence split by time), the recurrent
/// weights (`[H, H]`, transposed) and, for GRU's candidate with `linear_before_reset`, the
/// recurrent bias kept apart.
struct Gates {
    input: Vec<Vec<ValueRef>>,
    recurrent: Vec<ValueRef>,
    candidate_bias: Option<ValueRef>,
    peepholes: Vec<ValueRef>,
}

/// The steps of a recurrent layer's unrolling.
impl Builder<'_> {
    /// `Squeeze(Slice(x, [d, start], [d + 1, start + len]), 0)`: rows of direction `d`.
    fn rows(
        &mut self,
        x: ValueRef,
        d: usize,
        start: usize,
        len: usize,
    ) -> Result<ValueRef, PassError> {
        let (d, start, len) = (d as i64, start as i64, len as i64);
        let starts = self.ints(&[d, start], "starts")?;
        let ends = self.ints(&[d + 1, start + len], "ends")?;
        let axes = self.ints(&[0, 1], "axes")?;
        let slice = self.add(
            Op::Slice,
            "slice",
            &[Some(x), Some(starts), Some(ends), Some(axes)],
        );
        let zero = self.ints(&[0], "axes")?;
        Ok(self.add(Op::Squeeze, "squeeze", &[Some(slice), Some(zero)]))
    }

    fn binary(&mut self, op: Binary, a: ValueRef, b: ValueRef) -> ValueRef {
        let suffix = format!("{op:?}").to_lowercase();
        self.add(Op::Binary(op), &suffix, &[Some(a), Some(b)])
    }

    /// `a + b`, where a missing term is zero.
    fn plus(&mut self, a: ValueRef, b: Option<ValueRef>) -> ValueRef {
        match b {
            Some(b) => self.binary(Binary::Add, a, b),
            None => a,
        }
    }

    /// `op(clip(x))`, clipped when the layer clips.
    fn activate(&mut self, op: &Unary, x: ValueRef, clip: f32) -> Result<ValueRef, PassError> {
        let mut x = x;
        if clip > 0.0 {
            let (lo, hi) = (
                self.scalar(-f64::from(clip), "clip_min")?,
                self.scalar(f64::from(clip), "clip_max")?,
            );
            x = self.add(Op::Clip, "clip", &[Some(x), Some(lo), Some(hi)]);
        }
        let suffix = format!("{op:?}").to_lowercase();
        Ok(self.add(Op::Unary(op.clone()), &suffix, &[Some(x)]))
    }

    /// `Concat(parts, axis)`, or the one part.
    fn concat(&mut self, parts: &[ValueRef], axis: i64) -> ValueRef {
        match parts {
            [one] => *one,
            _ => {
                let inputs: Vec<Option<ValueRef>> = parts.iter().copied().map(Some).collect();
                self.add(Op::Concat { axis }, "concat", &inputs)
            }
        }
    }

    /// Direction `d`'s gate operands, from the sequence `x` (`[T, B, I]`).
    fn gates(&mut self, layer: &Layer, x: ValueRef, d: usize) -> Result<Gates, PassError> {
        let h = layer.hidden;
        let input = |k: usize| layer.inputs.get(k).copied().flatten();
        let (w, r) = (input(1), input(2));
        let (Some(w), Some(r)) = (w, r) else {
            return Err(PassError::Graph(format!(
                "{}: W and R are required",
                self.base
            )));
        };
        let gates = layer.cell.gates();
        let lbr = layer.cell == Cell::Gru && layer.attrs.linear_before_reset;
        let mut out = Gates {
            input: Vec::new(),
            recurrent: Vec::new(),
            candidate_bias: None,
            peepholes: Vec::new(),
        };
        let transpose = Op::Transpose { perm: vec![1, 0] };
        for g in 0..gates {
            let wg = self.rows(w, d, g * h, h)?;
            let wt = self.add(transpose.clone(), "transpose", &[Some(wg)]);
            let mut xg = self.add(Op::MatMul, "matmul", &[Some(x), Some(wt)]);
            if let Some(b) = input(3) {
                let wb = self.rows(b, d, g * h, h)?;
                xg = self.binary(Binary::Add, xg, wb);
                let rb = self.rows(b, d, (gates + g) * h, h)?;
                if lbr && g == 2 {
                    out.candidate_bias = Some(rb);
                } else {
                    xg = self.binary(Binary::Add, xg, rb);
                }
            }
            out.input.push(self.split_steps(xg, layer.steps)?);
            let rg = self.rows(r, d, g * h, h)?;
            out.recurrent
                .push(self.add(transpose.clone(), "transpose", &[Some(rg)]));
        }
        if let Some(p) = input(7).filter(|_| layer.cell == Cell::Lstm) {
            for k in 0..3 {
                out.peepholes.push(self.rows(p, d, k * h, h)?);
            }
        }
        Ok(out)
    }

    /// The initial state of direction `d` from input `slot` (`[D, B, H]`, or `[B, D, H]` in
    /// layout 1); `None` (zeros) when absent.
    fn initial(
        &mut self,
        layer: &Layer,
        slot: usize,
        d: usize,
    ) -> Result<Option<ValueRef>, PassError> {
        let Some(state) = layer.inputs.get(slot).copied().flatten() else {
            return Ok(None);
        };
        let index = self.int(d as i64, "direction")?;
        let axis = if layer.attrs.layout == 1 { 1 } else { 0 };
        Ok(Some(self.add(
            Op::Gather { axis },
            "initial",
            &[Some(state), Some(index)],
        )))
    }

    /// `x` (`[T, ...]`) as its `steps` slices along the first axis, that axis dropped: one
    /// `Split` (one kernel) and a view per slice.
    fn split_steps(&mut self, x: ValueRef, steps: usize) -> Result<Vec<ValueRef>, PassError> {
        let parts: Vec<ValueRef> = if steps == 1 {
            vec![x]
        } else {
            let op = Op::Split {
                axis: 0,
                num_outputs: steps as i64,
            };
            self.add_outputs(op, "steps", &[Some(x)], steps)
        };
        let mut out = Vec::with_capacity(steps);
        for part in parts {
            let axes = self.ints(&[0], "axes")?;
            out.push(self.add(Op::Squeeze, "step", &[Some(part), Some(axes)]));
        }
        Ok(out)
    }

    /// Gate `g`'s pre-activation at time `t`: its input part plus `h`'s product.
    fn pre(
        &mut self,
        gates: &Gates,
        g: usize,
        t: usize,
        h: Option<ValueRef>,
    ) -> Result<ValueRef, PassError> {
        let xg = gates.input[g][t];
        Ok(match h {
            Some(h) => {
                let hr = self.add(Op::MatMul, "matmul", &[Some(h), Some(gates.recurrent[g])]);
                self.binary(Binary::Add, xg, hr)
            }
            None => xg,
        })
    }

    /// `pre + p ⊙ c` with peephole `k` of `gates` when the layer has peepholes and a cell
    /// state `c`, else `pre`.
    fn peephole(
        &mut self,
        gates: &Gates,
        k: usize,
        pre: ValueRef,
        c: Option<ValueRef>,
    ) -> ValueRef {
        match gates.peepholes.get(k).copied().zip(c) {
            Some((p, c)) => {
                let pc = self.binary(Binary::Mul, p, c);
                self.binary(Binary::Add, pre, pc)
            }
            None => pre,
        }
    }

    /// One LSTM step (gates i, o, f, c; peepholes i, o, f): the new `(h, c)`.
    fn lstm_step(
        &mut self,
        layer: &Layer,
        acts: &[Unary],
        gates: &Gates,
        t: usize,
        (h, c): (Option<ValueRef>, Option<ValueRef>),
    ) -> Result<(ValueRef, ValueRef), PassError> {
        let clip = layer.attrs.clip;
        let (f, g, hh) = (&acts[0], &acts[1], &acts[2]);
        let pre_i = self.pre(gates, 0, t, h)?;
        let pre_i = self.peephole(gates, 0, pre_i, c);
        let i = self.activate(f, pre_i, clip)?;
        let forget = if layer.attrs.input_forget {
            let one = self.scalar(1.0, "one")?;
            self.binary(Binary::Sub, one, i)
        } else {
            let pre_f = self.pre(gates, 2, t, h)?;
            let pre_f = self.peephole(gates, 2, pre_f, c);
            self.activate(f, pre_f, clip)?
        };
        let pre_c = self.pre(gates, 3, t, h)?;
        let candidate = self.activate(g, pre_c, clip)?;
        let fresh = self.binary(Binary::Mul, i, candidate);
        let kept = c.map(|c| self.binary(Binary::Mul, forget, c));
        let c_new = self.plus(fresh, kept);
        let pre_o = self.pre(gates, 1, t, h)?;
        let pre_o = self.peephole(gates, 1, pre_o, Some(c_new));
        let o = self.activate(f, pre_o, clip)?;
        let out = self.activate(hh, c_new, 0.0)?;
        Ok((self.binary(Binary::Mul, o, out), c_new))
    }

    /// One GRU step (gates z, r, h): the new `h`.
    fn gru_step(
        &mut self,
        layer: &Layer,
        acts: &[Unary],
        gates: &Gates,
        t: usize,
        h: Option<ValueRef>,
    ) -> Result<ValueRef, PassError> {
        let clip = layer.attrs.clip;
        let (f, g) = (&acts[0], &acts[1]);
        let pre_z = self.pre(gates, 0, t, h)?;
        let z = self.activate(f, pre_z, clip)?;
        let pre_r = self.pre(gates, 1, t, h)?;
        let r = self.activate(f, pre_r, clip)?;
        let pre_h = if layer.attrs.linear_before_reset {
            // x·Wh + Wbh + r ⊙ (h·Rh + Rbh)
            let linear = match h {
                Some(h) => {
                    let hr = self.add(Op::MatMul, "matmul", &[Some(h), Some(gates.recurrent[2])]);
                    Some(self.plus(hr, gates.candidate_bias))
                }
                None => gates.candidate_bias,
            };
            let gated = linear.map(|l| self.binary(Binary::Mul, r, l));
            let xh = self.pre(gates, 2, t, None)?;
            self.plus(xh, gated)
        } else {
            // x·Wh + (r ⊙ h)·Rh + Wbh + Rbh
            let reset = h.map(|h| self.binary(Binary::Mul, r, h));
            self.pre(gates, 2, t, reset)?
        };
        let candidate = self.activate(g, pre_h, clip)?;
        let one = self.scalar(1.0, "one")?;
        let keep_new = self.binary(Binary::Sub, one, z);
        let fresh = self.binary(Binary::Mul, keep_new, candidate);
        let kept = h.map(|h| self.binary(Binary::Mul, z, h));
        Ok(self.plus(fresh, kept))
    }
}

/// Replaces layer `id` by its unrolling.
fn unroll(graph: &mut Graph, id: NodeId, layer: &Layer) -> Result<(), PassError> {
    let node = graph.node(id);
    let outputs: Vec<ValueRef> = (0..node.outputs.len())
        .map(|output| ValueRef { node: id, output })
        .collect();
    let mut b = Builder {
        base: node.name.clone(),
        graph,
        dtype: DType::F32,
        rule: "unroll-recurrent",
    };
    let x = layer.inputs[0].ok_or_else(|| PassError::Graph(format!("{}: no input", b.base)))?;
    // The sequence time-major: [T, B, I].
    let x = if layer.attrs.layout == 1 {
        b.add(
            Op::Transpose {
                perm: vec![1, 0, 2],
            },
            "time_major",
            &[Some(x)],
        )
    } else {
        x
    };
    let lens = match layer.lens {
        Some(lens) => {
            let cast = Op::Cast {
                to: DType::I64,
                saturate: true,
                round_mode: "up".into(),
            };
            Some(b.add_as(DType::I64, cast, "lens", &[Some(lens)]))
        }
        None => None,
    };
    let within = |b: &mut Builder, lens: ValueRef, x: ValueRef| {
        let op = Op::ReverseSequence {
            batch_axis: 1,
            time_axis: 0,
        };
        b.add(op, "reversed", &[Some(x), Some(lens)])
    };
    // With lengths: the zero ended sequences write, and which sequences are still running at
    // each step (`[B, 1]` per step, from one comparison of the step numbers with the lengths).
    let held = match lens {
        Some(lens) => {
            let zero = b.scalar(0.0, "zero")?;
            let steps: Vec<i64> = (0..layer.steps as i64).collect();
            let steps = b.ints(&steps, "times")?;
            let one = b.ints(&[1], "axes")?;
            let column = b.add_as(
                DType::I64,
                Op::Unsqueeze,
                "times",
                &[Some(steps), Some(one)],
            );
            let all = b.add_as(
                DType::Bool,
                Op::Binary(Binary::Less),
                "running",
                &[Some(column), Some(lens)],
            );
            let mut masks = Vec::with_capacity(layer.steps);
            for mask in b.split_steps(all, layer.steps)? {
                masks.push(b.unsqueeze(mask, &[1])?);
            }
            Some((zero, masks))
        }
        None => None,
    };
    let (mut ys, mut last_h, mut last_c) = (Vec::new(), Vec::new(), Vec::new());
    for d in 0..layer.directions {
        let backward = layer.attrs.direction == "reverse" || d == 1;
        // With run-time lengths the reverse direction runs forward over the reversed sequences.
        let (x_d, reverse) = match lens {
            Some(lens) if backward => (within(&mut b, lens, x), false),
            _ => (x, backward),
        };
        let gates = b.gates(layer, x_d, d)?;
        let acts = &layer.activations[d];
        let mut h = b.initial(layer, 5, d)?;
        let mut c = if layer.cell == Cell::Lstm {
            b.initial(layer, 6, d)?
        } else {
            None
        };
        let mut by_time = vec![None; layer.steps];
        for step in 0..layer.steps {
            let t = if reverse {
                layer.steps - 1 - step
            } else {
                step
            };
            let (h_new, c_new) = match layer.cell {
                Cell::Lstm => {
                    let (h_new, c_new) = b.lstm_step(layer, acts, &gates, t, (h, c))?;
                    (h_new, Some(c_new))
                }
                Cell::Gru => (b.gru_step(layer, acts, &gates, t, h)?, None),
                Cell::Rnn => {
                    let pre = b.pre(&gates, 0, t, h)?;
                    (b.activate(&acts[0], pre, layer.attrs.clip)?, None)
                }
            };
            match &held {
                // Sequences that have ended keep their state and write zeros.
                Some((zero, running)) => {
                    let (zero, running) = (*zero, running[t]);
                    let hold = |b: &mut Builder, new: ValueRef, old: Option<ValueRef>| {
                        let inputs = [Some(running), Some(new), Some(old.unwrap_or(zero))];
                        b.add(Op::Where, "hold", &inputs)
                    };
                    by_time[t] = Some(hold(&mut b, h_new, Some(zero)));
                    h = Some(hold(&mut b, h_new, h));
                    c = c_new.map(|c_new| hold(&mut b, c_new, c));
                }
                None => {
                    by_time[t] = Some(h_new);
                    h = Some(h_new);
                    c = c_new;
                }
            }
        }
        let mut frames = Vec::with_capacity(layer.steps);
        for h_t in by_time.into_iter().flatten() {
            frames.push(b.unsqueeze(h_t, &[0])?);
        }
        let mut y = b.concat(&frames, 0);
        if let Some(lens) = lens.filter(|_| backward) {
            y = within(&mut b, lens, y);
        }
        ys.push(b.unsqueeze(y, &[1])?);
        if let Some(h) = h {
            last_h.push(b.unsqueeze(h, &[0])?);
        }
        if let Some(c) = c {
            last_c.push(b.unsqueeze(c, &[0])?);
        }
    }
    let batch_first = layer.attrs.layout == 1;
    let mut results = Vec::new();
    let y = b.concat(&ys, 1);
    results.push(if batch_first {
        b.add(
            Op::Transpose {
                perm: vec![2, 0, 1, 3],
            },
            "batch_major",
            &[Some(y)],
        )
    } else {
        y
    });
    for states in [last_h, last_c] {
        if states.is_empty() {
            continue;
        }
        let s = b.concat(&states, 0);
        results.push(if batch_first {
            b.add(
                Op::Transpose {
                    perm: vec![1, 0, 2],
                },
                "batch_major",
                &[Some(s)],
            )
        } else {
            s
        });
    }
    for (old, new) in outputs.into_iter().zip(results) {
        let used = !readers(b.graph, old).is_empty() || b.graph.outputs.contains(&old);
        if used {
            take_place(b.graph, old, new);
        }
    }
    b.graph.dag.remove_node(id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{ops, run_checked, tensor_type};
    use sparkc_ir::{TensorType, Value, ValueType};

    fn attrs(direction: &str, hidden: i64) -> RnnAttrs {
        RnnAttrs {
            activation_alpha: Vec::new(),
            activation_beta: Vec::new(),
            activations: Vec::new(),
            clip: 0.0,
            direction: direction.into(),
            hidden_size: hidden,
            input_forget: false,
            layout: 0,
            linear_before_reset: false,
        }
    }

    /// A graph of one recurrent layer over inputs of the given types (`None`: omitted), all of
    /// whose outputs are graph outputs.
    fn layer_graph(op: Op, types: &[Option<&str>], outputs: usize) -> Graph {
        layer_graph_with_lens(op, types, None, outputs)
    }

    /// [`layer_graph`] with constant sequence lengths.
    fn layer_graph_with_lens(
        op: Op,
        types: &[Option<&str>],
        lens: Option<&[i64]>,
        outputs: usize,
    ) -> Graph {
        let mut g = Graph::new("test");
        let mut inputs: Vec<Option<ValueRef>> = types
            .iter()
            .enumerate()
            .map(|(i, ty)| ty.map(|ty| g.add_input(&format!("in{i}"), tensor_type(ty))))
            .collect();
        if let Some(lens) = lens {
            let bytes: Vec<u8> = lens
                .iter()
                .flat_map(|&l| (l as i32).to_le_bytes())
                .collect();
            let t = sparkc_ir::Tensor::new(DType::I32, vec![lens.len()], bytes.into())
                .expect("lengths");
            inputs.resize(inputs.len().max(5), None);
            inputs[4] = Some(g.add_const("lens", t));
        }
        let values = (0..outputs)
            .map(|k| Value {
                name: format!("out{k}"),
                ty: ValueType::Tensor(TensorType {
                    dtype: DType::F32,
                    shape: None,
                }),
                known: None,
            })
            .collect();
        let node = g.add_node("layer".into(), op, &inputs, values);
        g.outputs = (0..outputs)
            .map(|output| ValueRef { node, output })
            .collect();
        sparkc_ir::infer_graph(&mut g).expect("a valid layer");
        g
    }

    fn unrolled(op: Op, types: &[Option<&str>], outputs: usize) -> Vec<String> {
        unrolled_with_lens(op, types, None, outputs)
    }

    fn unrolled_with_lens(
        op: Op,
        types: &[Option<&str>],
        lens: Option<&[i64]>,
        outputs: usize,
    ) -> Vec<String> {
        let before = layer_graph_with_lens(op, types, lens, outputs);
        let after = run_checked(&mut UnrollRecurrent, &before);
        for (a, b) in before.outputs.iter().zip(&after.outputs) {
            assert_eq!(before.value(*a).name, after.value(*b).name);
        }
        ops(&after)
    }

    #[test]
    fn lstm_with_every_input_matches_the_layer() {
        // X [T=4, B, I=3], W [1, 4H, I], R [1, 4H, H], B [1, 8H], lens, h0, c0, P [1, 3H].
        let after = unrolled(
            Op::Lstm(attrs("forward", 2)),
            &[
                Some("f32[4,B,3]"),
                Some("f32[1,8,3]"),
                Some("f32[1,8,2]"),
                Some("f32[1,16]"),
                None,
                Some("f32[1,B,2]"),
                Some("f32[1,B,2]"),
                Some("f32[1,6]"),
            ],
            3,
        );
        assert!(!after.contains(&"LSTM".to_string()));
        assert_eq!(after.iter().filter(|o| *o == "MatMul").count(), 4 + 4 * 4);
    }

    #[test]
    fn bidirectional_batch_first_lstm_with_clip_and_coupled_gates() {
        let mut a = attrs("bidirectional", 3);
        a.layout = 1;
        a.clip = 0.7;
        a.input_forget = true;
        unrolled(
            Op::Lstm(a),
            &[
                Some("f32[B,3,2]"),
                Some("f32[2,12,2]"),
                Some("f32[2,12,3]"),
                Some("f32[2,24]"),
                None,
                Some("f32[B,2,3]"),
            ],
            3,
        );
    }

    #[test]
    fn gru_in_both_reset_orders() {
        for linear_before_reset in [false, true] {
            let mut a = attrs("reverse", 2);
            a.linear_before_reset = linear_before_reset;
            unrolled(
                Op::Gru(a),
                &[
                    Some("f32[5,B,3]"),
                    Some("f32[1,6,3]"),
                    Some("f32[1,6,2]"),
                    Some("f32[1,12]"),
                    None,
                    Some("f32[1,B,2]"),
                ],
                2,
            );
        }
        let mut a = attrs("bidirectional", 2);
        a.activations = ["Sigmoid", "Relu", "Sigmoid", "Tanh"]
            .map(String::from)
            .to_vec();
        a.linear_before_reset = true;
        unrolled(
            Op::Gru(a),
            &[Some("f32[3,2,4]"), Some("f32[2,6,4]"), Some("f32[2,6,2]")],
            2,
        );
    }

    #[test]
    fn sequences_cut_short_keep_their_state_and_write_zeros() {
        let after = unrolled_with_lens(
            Op::Lstm(attrs("bidirectional", 2)),
            &[
                Some("f32[4,3,2]"),
                Some("f32[2,8,2]"),
                Some("f32[2,8,2]"),
                Some("f32[2,16]"),
                None,
                Some("f32[2,3,2]"),
                Some("f32[2,3,2]"),
            ],
            Some(&[4, 2, 1]),
            3,
        );
        assert!(after.contains(&"ReverseSequence".to_string()));
        let mut a = attrs("reverse", 2);
        a.linear_before_reset = true;
        a.layout = 1;
        unrolled_with_lens(
            Op::Gru(a),
            &[
                Some("f32[3,4,2]"),
                Some("f32[1,6,2]"),
                Some("f32[1,6,2]"),
                Some("f32[1,12]"),
                None,
                Some("f32[3,1,2]"),
            ],
            Some(&[3, 0, 4]),
            2,
        );
    }

    #[test]
    fn plain_recurrences_in_both_directions() {
        let mut a = attrs("bidirectional", 3);
        a.activations = ["Relu", "Tanh"].map(String::from).to_vec();
        a.clip = 2.5;
        unrolled_with_lens(
            Op::Rnn(a),
            &[
                Some("f32[4,3,2]"),
                Some("f32[2,3,2]"),
                Some("f32[2,3,3]"),
                Some("f32[2,6]"),
                None,
                Some("f32[2,3,3]"),
            ],
            Some(&[4, 1, 3]),
            2,
        );
    }

    #[test]
    fn layers_it_cannot_unroll_stay() {
        let mut a = attrs("forward", 2);
        a.activations = ["Sigmoid", "Softsign"].map(String::from).to_vec();
        let cases = [
            // An activation it does not write.
            layer_graph(
                Op::Gru(a),
                &[Some("f32[3,1,2]"), Some("f32[1,6,2]"), Some("f32[1,6,2]")],
                2,
            ),
            // An unknown number of steps.
            layer_graph(
                Op::Gru(attrs("forward", 2)),
                &[Some("f32[T,1,2]"), Some("f32[1,6,2]"), Some("f32[1,6,2]")],
                2,
            ),
        ];
        for mut g in cases {
            UnrollRecurrent.run(&mut g).expect("runs");
            assert_eq!(ops(&g), ["GRU"]);
        }
    }
}

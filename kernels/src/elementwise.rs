//! Elementwise kernels: any expression body with numpy broadcasting, one output element per
//! thread iteration, with 128-bit loads and stores when every operand is contiguous `f32`.
//!
//! Reference: the CPU executor's elementwise ops and fused bodies (`sparkc-cpu`).

use crate::cg::{Cg, Gen, Val};
use crate::expr::eval_body;
use crate::narrow;
use crate::{Family, Generated, KernelError, Launch, Request};
use inkwell::context::Context;
use sparkc_ir::{BodyNode, DType, Dim, Op, Operand};

/// Threads per block.
const BLOCK: u32 = 256;

/// How one input is read: its stride along each collapsed output axis (`None`: broadcast).
#[derive(Clone, Debug, PartialEq)]
struct Access {
    strides: Vec<Option<Dim>>,
}

/// The output's axes after dropping size-1 axes and merging axes every input reads alike.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    dims: Vec<Dim>,
    inputs: Vec<Option<Access>>,
}

pub(crate) fn layout(out: &[Dim], inputs: &[Option<&[Dim]>]) -> Gen<Layout> {
    let rank = out.len();
    // Per axis: for each input, whether it runs along it (true) or is broadcast.
    let mut flags: Vec<Vec<bool>> = Vec::new();
    let mut kept: Vec<usize> = Vec::new();
    for (a, d) in out.iter().enumerate() {
        if d.as_const() == Some(1) {
            continue;
        }
        let mut row = Vec::with_capacity(inputs.len());
        for (i, shape) in inputs.iter().enumerate() {
            let Some(shape) = shape else {
                row.push(false);
                continue;
            };
            if shape.len() > rank {
                return Err(KernelError::Unsupported(format!(
                    "input {i} has more axes than the output"
                )));
            }
            let offset = rank - shape.len();
            let full = if a < offset {
                false
            } else {
                let s = &shape[a - offset];
                if s == d {
                    true
                } else if s.as_const() == Some(1) {
                    false
                } else {
                    return Err(KernelError::Unsupported(format!(
                        "input {i} does not broadcast to the output: {s} against {d} on axis {a}"
                    )));
                }
            };
            row.push(full);
        }
        flags.push(row);
        kept.push(a);
    }
    // Merge runs of axes with equal flags.
    let mut groups: Vec<(Vec<usize>, Vec<bool>)> = Vec::new();
    for (axis, row) in kept.iter().zip(flags) {
        match groups.last_mut() {
            Some((axes, f)) if *f == row => axes.push(*axis),
            _ => groups.push((vec![*axis], row)),
        }
    }
    let dims: Vec<Dim> = groups
        .iter()
        .map(|(axes, _)| {
            axes.iter()
                .fold(Dim::known(1), |acc, &a| acc * out[a].clone())
        })
        .collect();
    let mut accesses = Vec::with_capacity(inputs.len());
    for (i, shape) in inputs.iter().enumerate() {
        if shape.is_none() {
            accesses.push(None);
            continue;
        }
        let mut strides = vec![None; groups.len()];
        let mut stride = Dim::known(1);
        for (g, (_, f)) in groups.iter().enumerate().rev() {
            if f[i] {
                strides[g] = Some(stride.clone());
                stride = stride * dims[g].clone();
            }
        }
        accesses.push(Some(Access { strides }));
    }
    Ok(Layout {
        dims,
        inputs: accesses,
    })
}

impl Access {
    fn contiguous(&self) -> bool {
        self.strides.iter().all(|s| s.is_some())
    }

    fn scalar(&self) -> bool {
        self.strides.iter().all(|s| s.is_none())
    }
}

/// The body a single elementwise node computes: its op applied to its inputs in order.
pub fn single_op_body(op: &Op, arity: usize, present: impl Fn(usize) -> bool) -> Vec<BodyNode> {
    vec![BodyNode {
        op: op.clone(),
        args: (0..arity)
            .map(|i| present(i).then_some(Operand::Input(i)))
            .collect(),
    }]
}

/// Generates the kernel for an elementwise body.
pub fn generate<'ctx>(cx: &'ctx Context, req: &Request, body: &[BodyNode]) -> Gen<Generated<'ctx>> {
    let out = req
        .outputs
        .first()
        .ok_or_else(|| KernelError::Unsupported("no output".into()))?;
    // Inputs the body reads (Expand's shape and CastLike's type source are not read).
    let used = crate::reduce::inputs_used(body, req.inputs.len());
    let shapes: Vec<Option<&[Dim]>> = req
        .inputs
        .iter()
        .zip(&used)
        .map(|(t, &u)| t.as_ref().filter(|_| u).map(|t| t.shape.as_slice()))
        .collect();
    let lay = layout(&out.shape, &shapes)?;
    let vectorize = out.dtype == DType::F32
        && req
            .inputs
            .iter()
            .zip(&used)
            .all(|(t, &u)| !u || t.as_ref().is_some_and(|t| t.dtype == DType::F32))
        && lay
            .inputs
            .iter()
            .flatten()
            .all(|a| a.contiguous() || a.scalar());
    let mut cg = req.begin(cx, BLOCK);
    let n = cg.product(&out.shape)?;
    let read = |cg: &Cg<'ctx>, slot: usize, index| -> Gen<Val<'ctx>> {
        let t = req.input(slot)?;
        cg.load(t.dtype, cg.buffer(req.input_param(slot)), index)
    };
    let start = if vectorize {
        let n4 = cg.div(n, cg.c(4))?;
        let f32t = cg.f32t();
        let v4 = f32t.vec_type(4);
        cg.for_each_thread_item(cg.c(0), n4, |cg, j| {
            let base = cg.mul(j, cg.c(4))?;
            let mut lanes: Vec<Vec<Option<Val>>> = vec![Vec::new(); 4];
            for (slot, access) in lay.inputs.iter().enumerate() {
                let Some(access) = access else {
                    lanes.iter_mut().for_each(|l| l.push(None));
                    continue;
                };
                if access.scalar() {
                    let v = read(cg, slot, cg.c(0))?;
                    lanes.iter_mut().for_each(|l| l.push(Some(v)));
                    continue;
                }
                let values = cg.load_f32x4(cg.buffer(req.input_param(slot)), base)?;
                for (l, x) in lanes.iter_mut().zip(values) {
                    l.push(Some(Val::F(x)));
                }
            }
            let mut result = v4.get_undef();
            for (lane, inputs) in lanes.iter().enumerate() {
                let v =
                    eval_body(cg, body, |i| {
                        inputs.get(i).copied().flatten().ok_or_else(|| {
                            KernelError::Unsupported(format!("input {i} is missing"))
                        })
                    })?;
                let v = cg.narrow(DType::F32, v)?;
                result = cg.b.build_insert_element(
                    result,
                    v,
                    cg.cx.i32_type().const_int(lane as u64, false),
                    "",
                )?;
            }
            let ptr = cg.gep(DType::F32, cg.buffer(0), base)?;
            cg.store_aligned(ptr, result, 16)
        })?;
        cg.mul(n4, cg.c(4))?
    } else {
        cg.c(0)
    };
    // Output element `idx`, computed.
    let value_at = |cg: &Cg<'ctx>, idx| -> Gen<Val<'ctx>> {
        let offsets = offsets(cg, &lay, idx)?;
        let mut inputs = Vec::with_capacity(lay.inputs.len());
        for (slot, off) in offsets.iter().enumerate() {
            inputs.push(match off {
                Some(off) => Some(read(cg, slot, *off)?),
                None => None,
            });
        }
        eval_body(cg, body, |i| {
            inputs
                .get(i)
                .copied()
                .flatten()
                .ok_or_else(|| KernelError::Unsupported(format!("input {i} is missing")))
        })
    };
    let out_buffer = cg.buffer(0);
    if narrow::is_packed(out.dtype) {
        narrow::store_packed(&mut cg, out.dtype, out_buffer, n, |cg, idx| {
            let v = value_at(cg, idx)?;
            narrow::store_code(cg, out.dtype, v)
        })?;
    } else {
        // The scalar loop: everything, or the tail after the vector loop.
        cg.for_each_thread_item(start, n, |cg, idx| {
            let v = value_at(cg, idx)?;
            cg.store(out.dtype, out_buffer, idx, v)
        })?;
    }
    let per_block = if vectorize {
        4 * i64::from(BLOCK)
    } else {
        narrow::per_byte(out.dtype) * i64::from(BLOCK)
    };
    let launch = Launch {
        grid: out.numel().ceil_div(&Dim::known(per_block)),
        block: BLOCK,
        shared_bytes: 0,
        dynamic_shared_bytes: 0,
    };
    let covers = body.iter().map(|n| n.op.name()).collect();
    let variant = if vectorize {
        "vec4"
    } else if narrow::is_packed(out.dtype) {
        "packed"
    } else {
        "scalar"
    };
    let info = req.describe(Family::Elementwise, variant, covers, launch);
    Ok(Generated {
        info,
        module: cg.finish()?,
    })
}

/// Each present input's element offset for output element `idx`.
pub(crate) fn offsets<'ctx>(
    cg: &Cg<'ctx>,
    lay: &Layout,
    idx: inkwell::values::IntValue<'ctx>,
) -> Gen<Vec<Option<inkwell::values::IntValue<'ctx>>>> {
    // Coordinates along the collapsed axes, last axis fastest.
    let mut coords = vec![cg.c(0); lay.dims.len()];
    let mut rest = idx;
    for g in (0..lay.dims.len()).rev() {
        if g == 0 {
            coords[g] = rest;
        } else {
            let d = cg.dim(&lay.dims[g])?;
            coords[g] = cg.rem(rest, d)?;
            rest = cg.div(rest, d)?;
        }
    }
    let mut out = Vec::with_capacity(lay.inputs.len());
    for access in &lay.inputs {
        let Some(access) = access else {
            out.push(None);
            continue;
        };
        if access.contiguous() {
            out.push(Some(idx));
            continue;
        }
        let mut off = cg.c(0);
        for (g, stride) in access.strides.iter().enumerate() {
            if let Some(s) = stride {
                off = cg.add(off, cg.mul(coords[g], cg.dim(s)?)?)?;
            }
        }
        out.push(Some(off));
    }
    Ok(out)
}

/// Generates `ConstantOfShape`: every element set to the fill value.
pub fn generate_fill<'ctx>(
    cx: &'ctx Context,
    req: &Request,
    value: &sparkc_ir::Tensor,
) -> Gen<Generated<'ctx>> {
    let out = &req.outputs[0];
    let fill = value
        .to_f64s()
        .and_then(|v| v.first().copied())
        .unwrap_or(0.0);
    let mut cg = req.begin(cx, BLOCK);
    let n = cg.product(&out.shape)?;
    let v = if out.dtype.is_float() {
        Val::F(cg.f(fill))
    } else {
        Val::I(cg.c(fill as i64))
    };
    cg.for_each_thread_item(cg.c(0), n, |cg, idx| {
        cg.store(out.dtype, cg.buffer(0), idx, v)
    })?;
    one_element_a_thread(cg, req, "fill")
}

/// Generates `Range`: element `i` is `start + i·delta`, in integers or in the output's float
/// type's f32 arithmetic.
pub fn generate_range<'ctx>(cx: &'ctx Context, req: &Request) -> Gen<Generated<'ctx>> {
    let out = &req.outputs[0];
    let mut cg = req.begin(cx, BLOCK);
    let n = cg.product(&out.shape)?;
    let start = cg.load(out.dtype, cg.buffer(req.input_param(0)), cg.c(0))?;
    let delta = cg.load(out.dtype, cg.buffer(req.input_param(2)), cg.c(0))?;
    cg.for_each_thread_item(cg.c(0), n, |cg, i| {
        let v = match (start, delta) {
            (Val::I(s), Val::I(d)) => Val::I(cg.add(s, cg.mul(i, d)?)?),
            (s, d) => {
                let step = cg.fmul(cg.itof(i)?, d.float(cg)?)?;
                Val::F(cg.fadd(s.float(cg)?, step)?)
            }
        };
        cg.store(out.dtype, cg.buffer(0), i, v)
    })?;
    one_element_a_thread(cg, req, "range")
}

/// Finishes a kernel that writes the output one element per thread iteration, as `variant`.
fn one_element_a_thread<'ctx>(cg: Cg<'ctx>, req: &Request, variant: &str) -> Gen<Generated<'ctx>> {
    let launch = Launch {
        grid: req.outputs[0].numel().ceil_div(&Dim::known(BLOCK as i64)),
        block: BLOCK,
        shared_bytes: 0,
        dynamic_shared_bytes: 0,
    };
    let info = req.describe(Family::Elementwise, variant, vec![req.op.name()], launch);
    Ok(Generated {
        info,
        module: cg.finish()?,
    })
}

//! Convolutions (NCHW or NHWC, any number of spatial axes, groups, dilations) with their fused
//! epilogue: implicit GEMM on the tiled core of `gemm.rs` (A: the weights of a group, B: image
//! patches gathered on the fly, never materialised; channels last, a patch's k runs along the
//! contiguous channels), and a direct kernel for depthwise convolutions, whose one-channel
//! groups would waste a GEMM tile.
//!
//! Reference: the CPU executor's Conv (im2col and `gemm`), then its elementwise ops.

use crate::cg::{Cg, Gen, Val};
use crate::gemm::{
    check_scales, clamp_index, correction, element, masked, stages_as_is, tiled, THREADS, TILE_K,
    TILE_M, TILE_N,
};
use crate::operand::{combine, split, Factor, ScaleKind};
use crate::reduce::{cut, operand_input, Reader};
use crate::{mma, product, Family, Generated, KernelError, Launch, Request, Target};
use inkwell::context::Context;
use inkwell::values::{FloatValue, IntValue};
use inkwell::IntPredicate;
use sparkc_ir::op::{channels_first, AutoPad, ConvAttrs, ConvTransposeAttrs, Layout};
use sparkc_ir::{BodyNode, Dim, Op};

/// True for the convolutions this family generates.
pub fn handles(op: &Op) -> bool {
    matches!(op, Op::Conv(_) | Op::ConvTranspose(_))
}

fn is_conv_transpose(op: &Op) -> bool {
    matches!(op, Op::ConvTranspose(_))
}

fn is_conv(op: &Op) -> bool {
    matches!(op, Op::Conv(_))
}

/// Static geometry of one convolution.
struct Geometry {
    spatial: usize,
    kernel: Vec<i64>,
    strides: Vec<i64>,
    dilations: Vec<i64>,
    begin: Vec<i64>,
    group: i64,
}

/// The static kernel sizes (from the weights' shape), strides and dilations per spatial axis.
fn window(attrs: &ConvAttrs, w: &[Dim], spatial: usize) -> Gen<(Vec<i64>, Vec<i64>, Vec<i64>)> {
    let kernel: Vec<i64> = w[2..]
        .iter()
        .map(|d| {
            d.as_const()
                .ok_or_else(|| KernelError::Unsupported("kernel sizes must be static".into()))
        })
        .collect::<Gen<_>>()?;
    let per_axis = |v: &[i64]| -> Vec<i64> {
        (0..spatial)
            .map(|k| v.get(k).copied().unwrap_or(1))
            .collect()
    };
    Ok((kernel, per_axis(&attrs.strides), per_axis(&attrs.dilations)))
}

fn geometry(attrs: &ConvAttrs, x: &[Dim], w: &[Dim], y: &[Dim]) -> Gen<Geometry> {
    let spatial = x.len().saturating_sub(2);
    let (kernel, strides, dilations) = window(attrs, w, spatial)?;
    let mut begin = vec![0i64; spatial];
    for k in 0..spatial {
        begin[k] = match attrs.auto_pad {
            AutoPad::NotSet => attrs.pads.get(k).copied().unwrap_or(0),
            AutoPad::Valid => 0,
            AutoPad::SameUpper | AutoPad::SameLower => {
                let (Some(i), Some(o)) = (x[2 + k].as_const(), y[2 + k].as_const()) else {
                    return Err(KernelError::Unsupported(
                        "SAME padding needs static sizes".into(),
                    ));
                };
                let eff = (kernel[k] - 1) * dilations[k] + 1;
                let total = ((o - 1) * strides[k] + eff - i).max(0);
                if attrs.auto_pad == AutoPad::SameUpper {
                    total / 2
                } else {
                    total - total / 2
                }
            }
        };
    }
    Ok(Geometry {
        spatial,
        kernel,
        strides,
        dilations,
        begin,
        group: attrs.group.max(1),
    })
}

/// Generates the kernel of a convolution node, fused or not.
pub fn generate<'ctx>(cx: &'ctx Context, req: &Request, body: &[BodyNode]) -> Gen<Generated<'ctx>> {
    let parts = split(body, req.inputs.len(), is_conv)?;
    let anchor = &body[parts.anchor];
    let Op::Conv(attrs) = &anchor.op else {
        unreachable!("split found a Conv")
    };
    let b_slot = operand_input(anchor, 2);
    let mut cg = req.begin(cx, THREADS);
    let x = Factor::new(&mut cg, req, &parts.chains[0])?;
    let w = Factor::new(&mut cg, req, &parts.chains[1])?;
    let x_shape = x.shape.clone();
    let y_out = req.outputs[0].shape.clone();
    if x_shape.len() < 3 {
        return Err(KernelError::Unsupported(
            "Conv needs [N, C, spatial...]".into(),
        ));
    }
    // Sizes are read in channels-first order whatever the layout; only addresses differ.
    let nhwc = attrs.layout == Layout::Nhwc;
    let logical = |dims: &[Dim]| {
        if nhwc {
            channels_first(dims)
        } else {
            dims.to_vec()
        }
    };
    let (x_shape, w_shape, y_shape) = (logical(&x_shape), logical(&w.shape), logical(&y_out));
    // Weights scale per output channel and block along input channels; the image per tensor.
    check_scales(&w, 0, 1)?;
    if !matches!(x.scale_kind, ScaleKind::None | ScaleKind::Tensor) {
        return Err(KernelError::Unsupported(
            "a convolution's input must be quantized with one scale".into(),
        ));
    }
    let g = geometry(attrs, &x_shape, &w_shape, &y_shape)?;
    let sink = if parts.epilogue.is_empty() {
        None
    } else {
        Some(Reader::new(req, &parts.epilogue, &y_out)?)
    };
    let depthwise = g.group > 1 && x_shape[1].as_const() == Some(g.group);
    let batch = cg.dim(&x_shape[0])?;
    let cin = cg.dim(&x_shape[1])?;
    let cout = cg.dim(&y_shape[1])?;
    let groups = cg.c(g.group);
    let cin_g = cg.div(cin, groups)?;
    let m = cg.div(cout, groups)?;
    let window: i64 = g.kernel.iter().product();
    let k = cg.mul(cin_g, cg.c(window))?;
    let in_pixels = cg.product(&x_shape[2..])?;
    let out_pixels = cg.product(&y_shape[2..])?;
    let out_dtype = req.outputs[0].dtype;
    let b_info = match b_slot {
        Some(i) => Some((i, req.input(i)?.dtype)),
        None => None,
    };
    // Where input element (image, input channel, output pixel, kernel position) lies, and
    // whether it lies inside the image (outside it reads as zero padding).
    let gather =
        |cg: &Cg<'ctx>, image, channel, pixel, kpos| -> Gen<(IntValue<'ctx>, IntValue<'ctx>)> {
            let mut ok = cg.icmp(IntPredicate::EQ, cg.c(0), cg.c(0))?;
            let mut offset = cg.c(0);
            let mut rest_p = pixel;
            let mut rest_k = kpos;
            let mut coords = vec![cg.c(0); g.spatial];
            for a in (0..g.spatial).rev() {
                let od = cg.dim(&y_shape[2 + a])?;
                let o = if a == 0 { rest_p } else { cg.rem(rest_p, od)? };
                rest_p = cg.div(rest_p, od)?;
                let kd = cg.c(g.kernel[a]);
                let kk = if a == 0 { rest_k } else { cg.rem(rest_k, kd)? };
                rest_k = cg.div(rest_k, kd)?;
                let at = cg.add(
                    cg.sub(cg.mul(o, cg.c(g.strides[a]))?, cg.c(g.begin[a]))?,
                    cg.mul(kk, cg.c(g.dilations[a]))?,
                )?;
                let d = cg.dim(&x_shape[2 + a])?;
                ok = cg.and(
                    ok,
                    cg.and(
                        cg.icmp(IntPredicate::SGE, at, cg.c(0))?,
                        cg.icmp(IntPredicate::SLT, at, d)?,
                    )?,
                )?;
                coords[a] = cg.imin(cg.imax(at, cg.c(0))?, cg.sub(d, cg.c(1))?)?;
            }
            for (a, c) in coords.iter().enumerate() {
                offset = cg.add(cg.mul(offset, cg.dim(&x_shape[2 + a])?)?, *c)?;
            }
            let at = if nhwc {
                cg.add(
                    cg.mul(cg.add(cg.mul(image, in_pixels)?, offset)?, cin)?,
                    channel,
                )?
            } else {
                cg.add(
                    cg.mul(cg.add(cg.mul(image, cin)?, channel)?, in_pixels)?,
                    offset,
                )?
            };
            Ok((ok, at))
        };
    let finish = |cg: &mut Cg<'ctx>, image, channel, pixel, acc: FloatValue<'ctx>| -> Gen<()> {
        let scale = combine(cg, w.scale(cg, req, channel)?, x.scale(cg, req, cg.c(0))?)?;
        let mut y = match scale {
            Some(s) => cg.fmul(acc, s)?,
            None => acc,
        };
        if let Some((i, dtype)) = b_info {
            let bias = cg
                .load(dtype, cg.buffer(req.input_param(i)), channel)?
                .float(cg)?;
            y = cg.fadd(y, bias)?;
        }
        let q = if nhwc {
            cg.add(
                cg.mul(cg.add(cg.mul(image, out_pixels)?, pixel)?, cout)?,
                channel,
            )?
        } else {
            cg.add(
                cg.mul(cg.add(cg.mul(image, cout)?, channel)?, out_pixels)?,
                pixel,
            )?
        };
        let v = match &sink {
            None => Val::F(y),
            Some(s) => s.eval(cg, req, q, Some(Val::F(y)))?,
        };
        cg.store(out_dtype, cg.buffer(0), q, v)
    };
    let (variant, grid, block, shared) = if depthwise {
        // One output element per item: its channel's window.
        let total = cg.mul(cg.mul(batch, cout)?, out_pixels)?;
        let per_channel = cg.div(cout, groups)?;
        cg.for_each_thread_item(cg.c(0), total, |cg, q| {
            let (channel, pixel, image) = if nhwc {
                let rest = cg.div(q, cout)?;
                (
                    cg.rem(q, cout)?,
                    cg.rem(rest, out_pixels)?,
                    cg.div(rest, out_pixels)?,
                )
            } else {
                let plane = cg.div(q, out_pixels)?;
                (
                    cg.rem(plane, cout)?,
                    cg.rem(q, out_pixels)?,
                    cg.div(plane, cout)?,
                )
            };
            let in_channel = cg.div(channel, per_channel)?;
            let mut acc = cg.f(0.0);
            for kpos in 0..window {
                let (ok, at) = gather(cg, image, in_channel, pixel, cg.c(kpos))?;
                let v = masked(cg, ok, x.value(cg, req, at)?)?;
                let wi = cg.add(cg.mul(channel, cg.c(window))?, cg.c(kpos))?;
                acc = cg.fma(v, w.value(cg, req, wi)?, acc)?;
            }
            finish(cg, image, channel, pixel, acc)
        })?;
        let total = product(&y_shape);
        (
            "depthwise-direct".to_string(),
            total.ceil_div(&Dim::known(THREADS as i64)),
            THREADS,
            (0, 0),
        )
    } else {
        let units = cg.mul(batch, groups)?;
        let kind = match req.target {
            Target::Gpu(sm) => mma::Kind::choose(
                sm,
                req.precision,
                (w.class, w.has_zero()),
                (x.class, x.has_zero()),
            ),
            Target::Host => None,
        };
        // Patches are gathered element by element: FP4 blocks are multiplied as BF16 values.
        let kind = match kind {
            Some(k) if k.blocks() => Some(mma::Kind::Bf16),
            other => other,
        };
        let codes = kind.is_some_and(|k| k.codes());
        let load_a = |cg: &mut Cg<'ctx>, unit, row, col| -> Gen<Val<'ctx>> {
            let ok = cg.and(
                cg.icmp(IntPredicate::SLT, row, m)?,
                cg.icmp(IntPredicate::SLT, col, k)?,
            )?;
            let group = cg.rem(unit, groups)?;
            let (row, col) = (clamp_index(cg, row, m)?, clamp_index(cg, col, k)?);
            let oc = cg.add(cg.mul(group, m)?, row)?;
            let at = cg.add(cg.mul(oc, k)?, col)?;
            element(cg, req, &w, codes, ok, at)
        };
        // Where patch element (k, output pixel) of a work unit lies in the image, and whether
        // it lies inside (k and the pixel clamped into range).
        let patch = |cg: &Cg<'ctx>, unit, row, col| -> Gen<(IntValue<'ctx>, IntValue<'ctx>)> {
            let (image, group) = (cg.div(unit, groups)?, cg.rem(unit, groups)?);
            let (row, col) = (clamp_index(cg, row, k)?, clamp_index(cg, col, out_pixels)?);
            // k runs over (channel, kernel position) channels first, or (position, channel)
            // channels last, as the weights are laid out.
            let (ic, kpos) = if nhwc {
                (cg.rem(row, cin_g)?, cg.div(row, cin_g)?)
            } else {
                (cg.div(row, cg.c(window))?, cg.rem(row, cg.c(window))?)
            };
            let ic = cg.add(cg.mul(group, cin_g)?, ic)?;
            gather(cg, image, ic, col, kpos)
        };
        let load_b = |cg: &mut Cg<'ctx>, unit, row, col| -> Gen<Val<'ctx>> {
            let inside = cg.and(
                cg.icmp(IntPredicate::SLT, row, k)?,
                cg.icmp(IntPredicate::SLT, col, out_pixels)?,
            )?;
            let (ok, at) = patch(cg, unit, row, col)?;
            element(cg, req, &x, codes, cg.and(inside, ok)?, at)
        };
        let value_a = |cg: &mut Cg<'ctx>, unit, row, col| load_a(cg, unit, row, col)?.float(cg);
        let value_b = |cg: &mut Cg<'ctx>, unit, row, col| load_b(cg, unit, row, col)?.float(cg);
        let store = |cg: &mut Cg<'ctx>, unit, row, col, acc| -> Gen<()> {
            let (image, group) = (cg.div(unit, groups)?, cg.rem(unit, groups)?);
            let channel = cg.add(cg.mul(group, m)?, row)?;
            finish(cg, image, channel, col, acc)
        };
        let m_dim = y_shape[1].clone().floor_div(&Dim::known(g.group));
        let pixels = product(&y_shape[2..]);
        let units_dim = x_shape[0].clone() * Dim::known(g.group);
        let tensor_cores = match req.target {
            Target::Gpu(sm) => kind.map(|kind| {
                let tile = mma::Tile::choose(
                    sm,
                    kind,
                    false,
                    m_dim.as_const(),
                    pixels.as_const(),
                    units_dim.as_const(),
                );
                (kind, tile)
            }),
            Target::Host => None,
        };
        if let Some((kind, tile)) = tensor_cores {
            let aligned = w_shape[1]
                .as_const()
                .is_some_and(|c| (c * window) % kind.chunk_elems() == 0);
            let w_offset = |cg: &Cg<'ctx>, unit| {
                let group = cg.rem(unit, groups)?;
                cg.mul(cg.mul(group, m)?, k)
            };
            let a = mma::Operand {
                load: &load_a,
                fp4: None,
                direct: stages_as_is(kind, w.plain)
                    .filter(|_| aligned)
                    .map(|slot| mma::Direct {
                        base: cg.buffer(req.input_param(slot)),
                        rows: mma::Rows::Strided {
                            row_stride: k,
                            unit_offset: &w_offset,
                        },
                    }),
                k_contiguous: true,
            };
            // Channels last, a chunk of k is consecutive channels of one pixel when a group's
            // channels fill whole chunks: `cp.async` copies it, zero-filled outside the image.
            let chunked = nhwc
                && w_shape[1]
                    .as_const()
                    .is_some_and(|c| c % kind.chunk_elems() == 0);
            let patch_chunk = |cg: &Cg<'ctx>, unit, pixel, k| patch(cg, unit, k, pixel);
            let b = mma::Operand {
                load: &load_b,
                fp4: None,
                direct: stages_as_is(kind, x.plain)
                    .filter(|_| chunked)
                    .map(|slot| mma::Direct {
                        base: cg.buffer(req.input_param(slot)),
                        rows: mma::Rows::Gathered(&patch_chunk),
                    }),
                k_contiguous: nhwc,
            };
            let layout = match (nhwc, b.direct.is_some()) {
                (false, _) => "",
                (true, false) => " nhwc",
                (true, true) => " nhwc cp.async-patches",
            };
            let fix = correction(&cg, Some(kind), &w, &x)?;
            mma::tiled(
                &mut cg,
                kind,
                tile,
                units,
                (m, out_pixels, k),
                &a,
                &b,
                fix,
                &store,
            )?;
            let grid = units_dim
                * m_dim.ceil_div(&Dim::known(tile.block_m))
                * pixels.ceil_div(&Dim::known(tile.block_n()));
            (
                format!("implicit-gemm{layout} {}", tile.describe(kind)),
                grid,
                tile.threads(),
                (0, tile.shared_bytes(kind)),
            )
        } else {
            tiled(&mut cg, units, m, out_pixels, k, &value_a, &value_b, &store)?;
            let grid = units_dim
                * m_dim.ceil_div(&Dim::known(TILE_M))
                * pixels.ceil_div(&Dim::known(TILE_N));
            (
                format!("implicit-gemm simt-fp32 {TILE_M}x{TILE_N}x{TILE_K}"),
                grid,
                THREADS,
                (((TILE_M + TILE_N) * TILE_K * 4) as u32, 0),
            )
        }
    };
    let launch = Launch {
        grid,
        block,
        shared_bytes: shared.0,
        dynamic_shared_bytes: shared.1,
    };
    let covers = body.iter().map(|n| n.op.name()).collect();
    let info = req.describe(Family::Conv, variant, covers, launch);
    Ok(Generated {
        info,
        module: cg.finish()?,
    })
}

/// Static geometry of a transposed convolution: where output coordinate `o` reads input
/// `(o + begin - k·dilation) / stride` for tap `k`, when that divides evenly and lies inside.
fn transpose_geometry(
    attrs: &ConvTransposeAttrs,
    x: &[Dim],
    w: &[Dim],
    y: &[Dim],
) -> Gen<Geometry> {
    let a = &attrs.conv;
    let spatial = x.len().saturating_sub(2);
    let (kernel, strides, dilations) = window(a, w, spatial)?;
    let get = |v: &[i64], k: usize, default: i64| v.get(k).copied().unwrap_or(default);
    let mut begin = vec![0i64; spatial];
    let computed = !attrs.output_shape.is_empty()
        || matches!(a.auto_pad, AutoPad::SameUpper | AutoPad::SameLower);
    for k in 0..spatial {
        begin[k] = if computed {
            let (Some(i), Some(o)) = (x[2 + k].as_const(), y[2 + k].as_const()) else {
                return Err(KernelError::Unsupported(
                    "computed padding needs static spatial sizes".into(),
                ));
            };
            let eff = (kernel[k] - 1) * dilations[k] + 1;
            let full = strides[k] * (i - 1) + get(&attrs.output_padding, k, 0) + eff;
            let total = (full - o).max(0);
            if a.auto_pad == AutoPad::SameUpper {
                total / 2
            } else {
                total - total / 2
            }
        } else if a.auto_pad == AutoPad::Valid {
            0
        } else {
            get(&a.pads, k, 0)
        };
    }
    Ok(Geometry {
        spatial,
        kernel,
        strides,
        dilations,
        begin,
        group: a.group.max(1),
    })
}

/// Generates the kernel of a transposed convolution: one output element per
/// thread item, summing the input pixels and taps that land on it (no scattered writes).
pub fn generate_transpose<'ctx>(
    cx: &'ctx Context,
    req: &Request,
    body: &[BodyNode],
) -> Gen<Generated<'ctx>> {
    let c = cut(req, body, is_conv_transpose)?;
    let anchor = &body[c.anchor];
    let Op::ConvTranspose(attrs) = &anchor.op else {
        unreachable!("cut found a ConvTranspose")
    };
    let slot = |k: usize| operand_input(anchor, k);
    let w_slot = slot(1)
        .ok_or_else(|| KernelError::Unsupported("ConvTranspose weights must be an input".into()))?;
    let x_shape = c.x_shape.clone();
    let w = req.input(w_slot)?.clone();
    let y_shape = req.outputs[0].shape.clone();
    if x_shape.len() < 3 || w.shape.len() != x_shape.len() {
        return Err(KernelError::Unsupported(
            "ConvTranspose needs [N, C, spatial...] and weights of the same rank".into(),
        ));
    }
    let g = transpose_geometry(attrs, &x_shape, &w.shape, &y_shape)?;
    let (source, sink) = c.readers(req, &y_shape)?;
    let b_info = match slot(2) {
        Some(i) => Some((i, req.input(i)?.dtype)),
        None => None,
    };
    let out_dtype = req.outputs[0].dtype;
    let mut cg = req.begin(cx, THREADS);
    let batch = cg.dim(&x_shape[0])?;
    let cin = cg.dim(&x_shape[1])?;
    let cout = cg.dim(&y_shape[1])?;
    let groups = cg.c(g.group);
    let cin_g = cg.div(cin, groups)?;
    let cout_g = cg.div(cout, groups)?;
    let window: i64 = g.kernel.iter().product();
    let in_pixels = cg.product(&x_shape[2..])?;
    let out_pixels = cg.product(&y_shape[2..])?;
    let total = cg.mul(cg.mul(batch, cout)?, out_pixels)?;
    cg.for_each_thread_item(cg.c(0), total, |cg, q| {
        let pixel = cg.rem(q, out_pixels)?;
        let plane = cg.div(q, out_pixels)?;
        let channel = cg.rem(plane, cout)?;
        let image = cg.div(plane, cout)?;
        let group = cg.div(channel, cout_g)?;
        let channel_g = cg.rem(channel, cout_g)?;
        // Output coordinates, innermost axis last.
        let mut coords = vec![cg.c(0); g.spatial];
        let mut rest = pixel;
        for a in (0..g.spatial).rev() {
            let od = cg.dim(&y_shape[2 + a])?;
            coords[a] = cg.rem(rest, od)?;
            rest = cg.div(rest, od)?;
        }
        let zero = cg.f(0.0).into();
        let sums = cg.fold_range(cg.c(0), cin_g, cg.c(1), vec![zero], |cg, icg, acc| {
            let mut acc = acc[0].into_float_value();
            let ic = cg.add(cg.mul(group, cin_g)?, icg)?;
            let plane = cg.add(cg.mul(image, cin)?, ic)?;
            for kpos in 0..window {
                let mut ok = cg.icmp(IntPredicate::EQ, cg.c(0), cg.c(0))?;
                let mut offset = cg.c(0);
                let mut rest_k = kpos;
                let mut taps = vec![0i64; g.spatial];
                for a in (0..g.spatial).rev() {
                    taps[a] = rest_k % g.kernel[a];
                    rest_k /= g.kernel[a];
                }
                for a in 0..g.spatial {
                    let t = cg.sub(
                        cg.add(coords[a], cg.c(g.begin[a]))?,
                        cg.c(taps[a] * g.dilations[a]),
                    )?;
                    let stride = cg.c(g.strides[a]);
                    let i = cg.div(t, stride)?;
                    let d = cg.dim(&x_shape[2 + a])?;
                    ok = cg.and(ok, cg.icmp(IntPredicate::SGE, t, cg.c(0))?)?;
                    ok = cg.and(ok, cg.icmp(IntPredicate::EQ, cg.rem(t, stride)?, cg.c(0))?)?;
                    ok = cg.and(ok, cg.icmp(IntPredicate::SLT, i, d)?)?;
                    let i = cg.imin(cg.imax(i, cg.c(0))?, cg.sub(d, cg.c(1))?)?;
                    offset = cg.add(cg.mul(offset, d)?, i)?;
                }
                let at = cg.add(cg.mul(plane, in_pixels)?, offset)?;
                let xv = masked(cg, ok, source.eval(cg, req, at, None)?.float(cg)?)?;
                let wi = cg.add(
                    cg.mul(cg.add(cg.mul(ic, cout_g)?, channel_g)?, cg.c(window))?,
                    cg.c(kpos),
                )?;
                let wv = cg
                    .load(w.dtype, cg.buffer(req.input_param(w_slot)), wi)?
                    .float(cg)?;
                acc = cg.fma(xv, wv, acc)?;
            }
            Ok(vec![acc.into()])
        })?;
        let mut y = sums[0].into_float_value();
        if let Some((i, dtype)) = b_info {
            let bias = cg
                .load(dtype, cg.buffer(req.input_param(i)), channel)?
                .float(cg)?;
            y = cg.fadd(y, bias)?;
        }
        let v = match &sink {
            None => Val::F(y),
            Some(s) => s.eval(cg, req, q, Some(Val::F(y)))?,
        };
        cg.store(out_dtype, cg.buffer(0), q, v)
    })?;
    let launch = Launch {
        grid: product(&y_shape).ceil_div(&Dim::known(i64::from(THREADS))),
        block: THREADS,
        shared_bytes: 0,
        dynamic_shared_bytes: 0,
    };
    let covers = body.iter().map(|n| n.op.name()).collect();
    let info = req.describe(Family::Conv, "transpose-direct", covers, launch);
    Ok(Generated {
        info,
        module: cg.finish()?,
    })
}

//! Pooling: average, max (with indices), Lp and global pools, `MaxUnpool`, `MaxRoiPool`.

use super::conv::{geometry, PhaseLayout};
use super::elementwise::min_tasks;
use super::shape::transpose;
use super::R;
use crate::array::{strides, Array, Data};
use rayon::prelude::*;
use sparkc_ir::op::{to_channels_first, to_channels_last, Layout, PoolAttrs};

/// What a window computes.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Window {
    /// Mean, counting padding or not.
    Average { count_include_pad: bool },
    /// Maximum.
    Max,
    /// `(sum |x|^p)^(1/p)`.
    Lp(f64),
}

/// The window's kernel sizes and its geometry over the spatial axes of `x`.
fn window_geometry(x: &Array, attrs: &PoolAttrs) -> R<(Vec<usize>, super::conv::Geometry)> {
    let kernel: Vec<usize> = attrs
        .kernel_shape
        .iter()
        .map(|&k| k.max(1) as usize)
        .collect();
    let g = geometry(
        &x.shape[2..],
        &kernel,
        attrs.auto_pad,
        &attrs.pads,
        &attrs.strides,
        &attrs.dilations,
        attrs.ceil_mode,
    )?;
    Ok((kernel, g))
}

/// Slides a window over every plane of `x` (`[n, c, in...]`); returns values and flat argmax indices.
pub(crate) fn pool(
    x: &Array,
    attrs: &PoolAttrs,
    window: Window,
    storage_order: i64,
) -> R<(Array, Array)> {
    if x.rank() < 3 {
        return Err(format!("input must have rank ≥ 3, found {:?}", x.shape));
    }
    let (kernel, g) = window_geometry(x, attrs)?;
    let spatial = kernel.len();
    let planes = x.shape[0] * x.shape[1];
    let in_len: usize = g.input.iter().product();
    let out_len: usize = g.output.iter().product();
    let kernel_len: usize = kernel.iter().product();
    let values = x.data.to_f64s();
    let in_strides = strides(&g.input);
    let out_strides = strides(&g.output);
    let kernel_strides = strides(&kernel);
    let mut out = vec![0f64; planes * out_len];
    let mut arg = vec![0i64; planes * out_len];
    out.par_chunks_mut(out_len.max(1))
        .zip(arg.par_chunks_mut(out_len.max(1)))
        .with_min_len(min_tasks(out_len * kernel_len))
        .enumerate()
        .for_each(|(plane, (dst, idx))| {
            let src = &values[plane * in_len..(plane + 1) * in_len];
            for o in 0..out_len {
                let mut acc = match window {
                    Window::Max => f64::NEG_INFINITY,
                    _ => 0.0,
                };
                let (mut count, mut best) = (0usize, usize::MAX);
                let mut padded_count = 0usize;
                for k in 0..kernel_len {
                    let mut offset = 0;
                    let mut inside = true;
                    let mut in_padded = true;
                    for d in 0..spatial {
                        let kd = (k / kernel_strides[d]) % kernel[d];
                        let od = (o / out_strides[d]) % g.output[d];
                        let i = (od * g.strides[d] + kd * g.dilations[d]) as i64
                            - g.pad_begin[d] as i64;
                        if i < 0 || i as usize >= g.input[d] {
                            inside = false;
                            if i < -(g.pad_begin[d] as i64)
                                || i >= (g.input[d] + g.pad_end[d]) as i64
                            {
                                in_padded = false;
                            }
                        } else {
                            offset += i as usize * in_strides[d];
                        }
                    }
                    if in_padded {
                        padded_count += 1;
                    }
                    if !inside {
                        continue;
                    }
                    let v = src[offset];
                    count += 1;
                    match window {
                        Window::Max => {
                            if v > acc || best == usize::MAX {
                                acc = v;
                                best = offset;
                            }
                        }
                        Window::Average { .. } => acc += v,
                        Window::Lp(p) => acc += v.abs().powf(p),
                    }
                }
                dst[o] = match window {
                    Window::Max => acc,
                    Window::Average {
                        count_include_pad: true,
                    } => acc / padded_count.max(1) as f64,
                    Window::Average {
                        count_include_pad: false,
                    } => acc / count.max(1) as f64,
                    Window::Lp(p) => acc.powf(1.0 / p),
                };
                let flat = if storage_order == 1 && spatial == 2 && best != usize::MAX {
                    let (h, w) = (best / g.input[1], best % g.input[1]);
                    w * g.input[0] + h
                } else {
                    best
                };
                idx[o] = if best == usize::MAX {
                    -1
                } else {
                    (plane * in_len + flat) as i64
                };
            }
        });
    let mut shape = x.shape[..2].to_vec();
    shape.extend(&g.output);
    Ok((
        Array::new(shape.clone(), Data::from_f64s(x.dtype(), out, false)),
        Array::i64(shape, arg),
    ))
}

/// Max or average pooling of f32 planes over two spatial axes, without indices.
fn pool_2d_f32(x: &Array, attrs: &PoolAttrs, window: Window) -> R<Option<Array>> {
    // None: max; Some(count_include_pad): average. Lp pools take the general path.
    let average = match window {
        Window::Max => None,
        Window::Average { count_include_pad } => Some(count_include_pad),
        Window::Lp(_) => return Ok(None),
    };
    let (Data::F32(values), 4, 2) = (&x.data, x.rank(), attrs.kernel_shape.len()) else {
        return Ok(None);
    };
    let (kernel, g) = window_geometry(x, attrs)?;
    let (ih, iw, oh, ow) = (g.input[0], g.input[1], g.output[0], g.output[1]);
    let (kh, kw) = (kernel[0], kernel[1]);
    let taps = g.taps();
    // Per axis and output position: how many taps land inside the input, and how many inside
    // the padded extent (the count_include_pad divisor).
    let counts = |d: usize| -> Vec<(usize, usize)> {
        (0..g.output[d])
            .map(|o| {
                let padded = (0..kernel[d])
                    .filter(|&k| {
                        let i = o * g.strides[d] + k * g.dilations[d];
                        i < g.input[d] + g.pad_begin[d] + g.pad_end[d]
                    })
                    .count();
                let inside = (0..kernel[d]).filter(|&k| taps[d][k][o].is_some()).count();
                (inside, padded)
            })
            .collect()
    };
    let (rows, cols) = (counts(0), counts(1));
    let layout = PhaseLayout::new(&g);
    let width = layout.width;
    let mut out = vec![0f32; x.shape[0] * x.shape[1] * oh * ow];
    if oh * ow == 0 {
        let shape = vec![x.shape[0], x.shape[1], oh, ow];
        return Ok(Some(Array::f32(shape, out)));
    }
    out.par_chunks_mut(oh * ow)
        .with_min_len(min_tasks(oh * ow * kh * kw))
        .enumerate()
        .for_each_init(
            || (Vec::new(), Vec::new()),
            |(phases, acc), (plane, dst)| {
                let src = &values[plane * ih * iw..(plane + 1) * ih * iw];
                // Padding never wins a max and adds nothing to a sum.
                let pad = if average.is_some() {
                    0.0
                } else {
                    f32::NEG_INFINITY
                };
                phases.resize(layout.len(), 0.0);
                layout.split(src, pad, phases);
                acc.clear();
                acc.resize(oh * width, pad);
                // Tap by tap over every output at once: loops the compiler vectorizes.
                for &tap in &layout.taps {
                    let start = layout.start(tap);
                    let lanes = &phases[start..start + acc.len()];
                    if average.is_some() {
                        acc.iter_mut().zip(lanes).for_each(|(a, &v)| *a += v);
                    } else {
                        acc.iter_mut().zip(lanes).for_each(|(a, &v)| *a = a.max(v));
                    }
                }
                for (oy, (drow, arow)) in dst.chunks_mut(ow).zip(acc.chunks(width)).enumerate() {
                    drow.copy_from_slice(&arow[..ow]);
                    if let Some(count_include_pad) = average {
                        let (y_inside, y_padded) = rows[oy];
                        for (o, &(x_inside, x_padded)) in drow.iter_mut().zip(&cols) {
                            let count = if count_include_pad {
                                y_padded * x_padded
                            } else {
                                y_inside * x_inside
                            };
                            *o /= count.max(1) as f32;
                        }
                    }
                }
            },
        );
    let shape = vec![x.shape[0], x.shape[1], oh, ow];
    Ok(Some(Array::f32(shape, out)))
}

/// Runs a channels-last pool through a channels-first copy of its input.
fn channels_last(
    x: &Array,
    attrs: &PoolAttrs,
    pool: impl Fn(&Array, &PoolAttrs) -> R<Array>,
) -> R<Array> {
    let nchw = PoolAttrs {
        layout: Layout::Nchw,
        ..attrs.clone()
    };
    let y = pool(&transpose(x, &to_channels_first(x.rank()))?, &nchw)?;
    transpose(&y, &to_channels_last(y.rank()))
}

/// `AveragePool`, in either layout.
pub(crate) fn average_pool(x: &Array, attrs: &PoolAttrs, count_include_pad: bool) -> R<Array> {
    if attrs.layout == Layout::Nhwc {
        return channels_last(x, attrs, |x, a| average_pool(x, a, count_include_pad));
    }
    let window = Window::Average { count_include_pad };
    if let Some(fast) = pool_2d_f32(x, attrs, window)? {
        return Ok(fast);
    }
    Ok(pool(x, attrs, window, 0)?.0)
}

/// `MaxPool`, with the indices output when the node has two outputs.
pub(crate) fn max_pool(
    x: &Array,
    attrs: &PoolAttrs,
    storage_order: i64,
    outputs: usize,
) -> R<Vec<Array>> {
    if attrs.layout == Layout::Nhwc {
        if outputs > 1 {
            return Err("a channels-last MaxPool has no indices output".into());
        }
        let values = channels_last(x, attrs, |x, a| {
            max_pool(x, a, storage_order, 1)?
                .pop()
                .ok_or_else(|| "MaxPool gave no output".to_string())
        })?;
        return Ok(vec![values]);
    }
    if outputs == 1 {
        if let Some(fast) = pool_2d_f32(x, attrs, Window::Max)? {
            return Ok(vec![fast]);
        }
    }
    let (values, indices) = pool(x, attrs, Window::Max, storage_order)?;
    Ok(if outputs > 1 {
        vec![values, indices]
    } else {
        vec![values]
    })
}

/// `GlobalAveragePool` / `GlobalMaxPool`.
pub(crate) fn global(x: &Array, max: bool) -> R<Array> {
    if x.rank() < 2 {
        return Err(format!("input must have rank ≥ 2, found {:?}", x.shape));
    }
    let planes = x.shape[0] * x.shape[1];
    let len: usize = x.shape[2..].iter().product();
    let values = x.data.f32s();
    let out: Vec<f32> = (0..planes)
        .into_par_iter()
        .with_min_len(min_tasks(len))
        .map(|p| {
            let plane = &values[p * len..(p + 1) * len];
            if max {
                plane.iter().copied().fold(f32::NEG_INFINITY, f32::max)
            } else {
                (super::norm::lane_sum(plane, |v| v) / len as f64) as f32
            }
        })
        .collect();
    let mut shape = x.shape[..2].to_vec();
    shape.extend(std::iter::repeat_n(1, x.rank() - 2));
    Ok(Array::new(shape, Data::from_f32s(x.dtype(), out)))
}

/// `MaxUnpool`: scatters `x` to the flat positions in `indices`; inputs `x, indices, output_shape?`.
pub(crate) fn max_unpool(
    args: &super::Args,
    kernel: &[i64],
    pads: &[i64],
    strides_: &[i64],
) -> R<Array> {
    let x = args.tensor(0)?;
    let indices = args.tensor(1)?.data.to_i64s();
    let spatial = x.rank().checked_sub(2).ok_or("input must have rank ≥ 3")?;
    let mut inferred = x.shape[..2].to_vec();
    for d in 0..spatial {
        let stride = strides_.get(d).copied().unwrap_or(1);
        let pad = pads.get(d).copied().unwrap_or(0) + pads.get(d + spatial).copied().unwrap_or(0);
        let k = kernel.get(d).copied().unwrap_or(1);
        inferred.push(((x.shape[d + 2] as i64 - 1) * stride + k - pad).max(0) as usize);
    }
    let len: usize = inferred.iter().product();
    let values = x.data.to_f64s();
    let mut out = vec![0.0; len];
    for (v, &i) in values.iter().zip(&indices) {
        let i = usize::try_from(i)
            .ok()
            .filter(|&i| i < len)
            .ok_or_else(|| format!("index {i} is outside the output of {len} elements"))?;
        out[i] = *v;
    }
    let unpooled = Array::new(inferred.clone(), Data::from_f64s(x.dtype(), out, false));
    // An explicit output shape receives the unpooled values in its leading corner.
    match args.opt_ints(2)? {
        Some(s) => {
            let shape: Vec<i64> = s.iter().map(|&d| d.max(0)).collect();
            let pads: Vec<i64> = (0..2 * shape.len())
                .map(|i| {
                    if i < shape.len() {
                        0
                    } else {
                        shape[i - shape.len()] - inferred[i - shape.len()] as i64
                    }
                })
                .collect();
            super::shape::pad(&unpooled, &pads, None, None, "constant")
        }
        None => Ok(unpooled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparkc_ir::op::AutoPad;

    fn attrs(
        kernel: &[i64],
        pads: &[i64],
        strides: &[i64],
        dilations: &[i64],
        ceil: bool,
    ) -> PoolAttrs {
        PoolAttrs {
            auto_pad: AutoPad::NotSet,
            ceil_mode: ceil,
            dilations: dilations.to_vec(),
            kernel_shape: kernel.to_vec(),
            pads: pads.to_vec(),
            strides: strides.to_vec(),
            layout: Layout::Nchw,
        }
    }

    /// The 2-D f32 path against the general N-d path, which walks every window in f64.
    #[test]
    fn the_planar_pool_matches_the_general_one() {
        let shape = vec![2, 3, 13, 11];
        let len: usize = shape.iter().product();
        let x = Array::f32(
            shape,
            (0..len)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect(),
        );
        let cases = [
            attrs(&[2, 2], &[], &[2, 2], &[], false),
            attrs(&[3, 3], &[1, 1, 1, 1], &[1, 1], &[], false),
            attrs(&[3, 2], &[1, 0, 2, 1], &[2, 3], &[], true),
            attrs(&[2, 3], &[0, 1, 1, 0], &[1, 2], &[2, 2], false),
            attrs(&[5, 5], &[2, 2, 2, 2], &[3, 2], &[], true),
        ];
        for a in &cases {
            for window in [
                Window::Max,
                Window::Average {
                    count_include_pad: false,
                },
                Window::Average {
                    count_include_pad: true,
                },
            ] {
                let fast = pool_2d_f32(&x, a, window).expect("fast").expect("taken");
                let general = pool(&x, a, window, 0).expect("general").0;
                assert_eq!(fast.shape, general.shape, "{a:?}");
                for (i, (f, g)) in fast
                    .data
                    .to_f32s()
                    .iter()
                    .zip(general.data.to_f32s())
                    .enumerate()
                {
                    assert!(
                        (f - g).abs() <= 1e-5 * (1.0 + g.abs()),
                        "{a:?}: element {i}: {f} vs {g}"
                    );
                }
            }
        }
    }
}

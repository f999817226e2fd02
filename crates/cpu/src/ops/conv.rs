//! Convolutions: N-d `Conv` as im2col + GEMM (depthwise direct), `ConvTranspose` as GEMM + col2im.

use super::elementwise::min_tasks;
use super::linalg::{matmul_into, Mat};
use super::shape::transpose;
use super::R;
use crate::array::{strides, Array, Data};
use rayon::prelude::*;
use sparkc_ir::op::{
    to_channels_first, to_channels_last, AutoPad, ConvAttrs, ConvTransposeAttrs, Layout,
};

/// Resolved geometry of one convolution or pool.
pub(crate) struct Geometry {
    /// Input spatial sizes.
    pub input: Vec<usize>,
    /// Kernel spatial sizes.
    pub kernel: Vec<usize>,
    /// Output spatial sizes.
    pub output: Vec<usize>,
    /// Stride per axis.
    pub strides: Vec<usize>,
    /// Dilation per axis.
    pub dilations: Vec<usize>,
    /// Padding before each axis.
    pub pad_begin: Vec<usize>,
    /// Padding after each axis.
    pub pad_end: Vec<usize>,
}

fn or_ones(values: &[i64], n: usize) -> Vec<usize> {
    if values.is_empty() {
        vec![1; n]
    } else {
        values.iter().map(|&v| v.max(1) as usize).collect()
    }
}

/// Output sizes and padding of a sliding window over `input`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn geometry(
    input: &[usize],
    kernel: &[usize],
    auto_pad: AutoPad,
    pads: &[i64],
    stride: &[i64],
    dilation: &[i64],
    ceil_mode: bool,
) -> R<Geometry> {
    let n = input.len();
    let strides = or_ones(stride, n);
    let dilations = or_ones(dilation, n);
    if kernel.len() != n || strides.len() != n || dilations.len() != n {
        return Err(format!(
            "kernel {kernel:?}, strides and dilations must have {n} entries"
        ));
    }
    let mut output = Vec::with_capacity(n);
    let mut pad_begin = Vec::with_capacity(n);
    let mut pad_end = Vec::with_capacity(n);
    for d in 0..n {
        let eff = (kernel[d] - 1) * dilations[d] + 1;
        let (begin, end) = match auto_pad {
            AutoPad::NotSet => {
                if pads.is_empty() {
                    (0, 0)
                } else if pads.len() != 2 * n {
                    return Err(format!("pads {pads:?} must have {} entries", 2 * n));
                } else {
                    (pads[d].max(0) as usize, pads[d + n].max(0) as usize)
                }
            }
            AutoPad::Valid => (0, 0),
            AutoPad::SameUpper | AutoPad::SameLower => {
                let out = input[d].div_ceil(strides[d]);
                let total = ((out - 1) * strides[d] + eff).saturating_sub(input[d]);
                if auto_pad == AutoPad::SameUpper {
                    (total / 2, total - total / 2)
                } else {
                    (total - total / 2, total / 2)
                }
            }
        };
        let span = input[d] + begin + end;
        if span < eff {
            return Err(format!(
                "kernel {eff} is larger than the padded input {span}"
            ));
        }
        let mut out = if ceil_mode {
            (span - eff).div_ceil(strides[d]) + 1
        } else {
            (span - eff) / strides[d] + 1
        };
        if ceil_mode && (out - 1) * strides[d] >= input[d] + begin {
            out -= 1;
        }
        output.push(out);
        pad_begin.push(begin);
        pad_end.push(end);
    }
    Ok(Geometry {
        input: input.to_vec(),
        kernel: kernel.to_vec(),
        output,
        strides,
        dilations,
        pad_begin,
        pad_end,
    })
}

impl Geometry {
    /// Per axis, per kernel tap, per output position: the input coordinate, if inside.
    pub(crate) fn taps(&self) -> Vec<Vec<Vec<Option<usize>>>> {
        (0..self.input.len())
            .map(|d| {
                (0..self.kernel[d])
                    .map(|k| {
                        (0..self.output[d])
                            .map(|o| {
                                let i = (o * self.strides[d] + k * self.dilations[d]) as i64
                                    - self.pad_begin[d] as i64;
                                (i >= 0 && (i as usize) < self.input[d]).then_some(i as usize)
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect()
    }
}

/// The range of output positions whose tap `k` lands inside the input, per axis.
fn valid_range(taps: &[Option<usize>]) -> (usize, usize) {
    let start = taps.iter().position(Option::is_some).unwrap_or(taps.len());
    let end = taps
        .iter()
        .rposition(Option::is_some)
        .map_or(start, |e| e + 1);
    (start, end)
}

/// `im2col` of a 2-D image: each row (channel, ky, kx) is copied output row by output row.
fn im2col_2d(
    image: &[f32],
    channels: usize,
    g: &Geometry,
    taps: &[Vec<Vec<Option<usize>>>],
) -> Vec<f32> {
    let (ih, iw) = (g.input[0], g.input[1]);
    let (oh, ow) = (g.output[0], g.output[1]);
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    let mut col = vec![0f32; channels * kh * kw * oh * ow];
    col.par_chunks_mut((oh * ow).max(1))
        .with_min_len(min_tasks(oh * ow))
        .enumerate()
        .for_each(|(row, dst)| {
            let (c, ky, kx) = (row / (kh * kw), (row / kw) % kh, row % kw);
            let src = &image[c * ih * iw..(c + 1) * ih * iw];
            let (x0, x1) = valid_range(&taps[1][kx]);
            let stride = g.strides[1];
            for oy in 0..oh {
                let Some(iy) = taps[0][ky][oy] else { continue };
                let out_row = &mut dst[oy * ow..(oy + 1) * ow];
                let Some(ix0) = taps[1][kx].get(x0).copied().flatten() else {
                    continue;
                };
                let in_row = &src[iy * iw..(iy + 1) * iw];
                if stride == 1 {
                    out_row[x0..x1].copy_from_slice(&in_row[ix0..ix0 + (x1 - x0)]);
                } else {
                    for (j, o) in out_row[x0..x1].iter_mut().enumerate() {
                        *o = in_row[ix0 + j * stride];
                    }
                }
            }
        });
    col
}

/// Unrolls one image's channels `[channels, in...]` into `[channels·k..., out...]`.
fn im2col(
    image: &[f32],
    channels: usize,
    g: &Geometry,
    taps: &[Vec<Vec<Option<usize>>>],
) -> Vec<f32> {
    if g.input.len() == 2 {
        return im2col_2d(image, channels, g, taps);
    }
    let kernel_len: usize = g.kernel.iter().product();
    let out_len: usize = g.output.iter().product();
    let in_len: usize = g.input.iter().product();
    let in_strides = strides(&g.input);
    let out_strides = strides(&g.output);
    let kernel_strides = strides(&g.kernel);
    let mut col = vec![0f32; channels * kernel_len * out_len];
    col.par_chunks_mut(out_len.max(1))
        .with_min_len(min_tasks(out_len))
        .enumerate()
        .for_each(|(row, dst)| {
            let (c, kidx) = (row / kernel_len, row % kernel_len);
            let src = &image[c * in_len..(c + 1) * in_len];
            for (o, v) in dst.iter_mut().enumerate() {
                let mut offset = 0;
                let mut inside = true;
                for d in 0..g.input.len() {
                    let k = (kidx / kernel_strides[d]) % g.kernel[d];
                    let p = (o / out_strides[d]) % g.output[d];
                    match taps[d][k][p] {
                        Some(i) => offset += i * in_strides[d],
                        None => {
                            inside = false;
                            break;
                        }
                    }
                }
                *v = if inside { src[offset] } else { 0.0 };
            }
        });
    col
}

/// N-d convolution of f32 data; `x` is `[n, c, in...]`, `w` is `[m, c/group, k...]`.
pub(crate) fn conv_f32(
    x: &[f32],
    x_shape: &[usize],
    w: &[f32],
    w_shape: &[usize],
    bias: Option<&[f32]>,
    attrs: &ConvAttrs,
) -> R<(Vec<f32>, Vec<usize>)> {
    if x_shape.len() < 3 || w_shape.len() != x_shape.len() {
        return Err(format!(
            "input {x_shape:?} and weight {w_shape:?} must have equal rank ≥ 3"
        ));
    }
    let (n, c) = (x_shape[0], x_shape[1]);
    let m = w_shape[0];
    let group = attrs.group.max(1) as usize;
    if c % group != 0 || m % group != 0 || w_shape[1] * group != c {
        return Err(format!(
            "input channels {c}, weight {w_shape:?} and group {group} do not agree"
        ));
    }
    let kernel: Vec<usize> = if attrs.kernel_shape.is_empty() {
        w_shape[2..].to_vec()
    } else {
        attrs.kernel_shape.iter().map(|&k| k as usize).collect()
    };
    let g = geometry(
        &x_shape[2..],
        &kernel,
        attrs.auto_pad,
        &attrs.pads,
        &attrs.strides,
        &attrs.dilations,
        false,
    )?;
    let (cg, mg) = (c / group, m / group);
    let kernel_len: usize = kernel.iter().product();
    let in_len: usize = g.input.iter().product();
    let out_len: usize = g.output.iter().product();
    let mut shape = vec![n, m];
    shape.extend(&g.output);
    let mut out = vec![0f32; n * m * out_len];
    let taps = g.taps();
    if group == c && mg == 1 && g.input.len() == 2 {
        depthwise(x, w, &g, &taps, n, c, &mut out);
    } else {
        let pointwise = kernel_len == 1
            && g.strides.iter().all(|&s| s == 1)
            && g.pad_begin.iter().all(|&p| p == 0)
            && g.output == g.input;
        for b in 0..n {
            for gi in 0..group {
                let image = &x[(b * c + gi * cg) * in_len..(b * c + (gi + 1) * cg) * in_len];
                let col_owned;
                let col: &[f32] = if pointwise {
                    image
                } else {
                    col_owned = im2col(image, cg, &g, &taps);
                    &col_owned
                };
                let weights = &w[gi * mg * cg * kernel_len..(gi + 1) * mg * cg * kernel_len];
                let dst = &mut out[(b * m + gi * mg) * out_len..(b * m + (gi + 1) * mg) * out_len];
                matmul_into(
                    mg,
                    out_len,
                    cg * kernel_len,
                    Mat::rows(weights, cg * kernel_len),
                    Mat::rows(col, out_len),
                    dst,
                    false,
                    true,
                );
            }
        }
    }
    if let Some(bias) = bias {
        if bias.len() != m {
            return Err(format!(
                "bias has {} values for {m} output channels",
                bias.len()
            ));
        }
        out.par_chunks_mut(out_len.max(1))
            .with_min_len(min_tasks(out_len))
            .enumerate()
            .for_each(|(row, chunk)| {
                let b = bias[row % m];
                chunk.iter_mut().for_each(|v| *v += b);
            });
    }
    Ok((out, shape))
}

fn depthwise(
    x: &[f32],
    w: &[f32],
    g: &Geometry,
    taps: &[Vec<Vec<Option<usize>>>],
    n: usize,
    c: usize,
    out: &mut [f32],
) {
    let (ih, iw) = (g.input[0], g.input[1]);
    let (oh, ow) = (g.output[0], g.output[1]);
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    out.par_chunks_mut((oh * ow).max(1))
        .with_min_len(min_tasks(oh * ow * kh * kw))
        .enumerate()
        .take(n * c)
        .for_each(|(plane, dst)| {
            let ch = plane % c;
            let src = &x[plane * ih * iw..(plane + 1) * ih * iw];
            let weights = &w[ch * kh * kw..(ch + 1) * kh * kw];
            let stride = g.strides[1];
            for ky in 0..kh {
                for kx in 0..kw {
                    let wv = weights[ky * kw + kx];
                    let (x0, x1) = valid_range(&taps[1][kx]);
                    let Some(ix0) = taps[1][kx].get(x0).copied().flatten() else {
                        continue;
                    };
                    for oy in 0..oh {
                        let Some(iy) = taps[0][ky][oy] else { continue };
                        let row = &src[iy * iw..(iy + 1) * iw];
                        let drow = &mut dst[oy * ow + x0..oy * ow + x1];
                        if stride == 1 {
                            for (d, &s) in drow.iter_mut().zip(&row[ix0..ix0 + (x1 - x0)]) {
                                *d += wv * s;
                            }
                        } else {
                            for (j, d) in drow.iter_mut().enumerate() {
                                *d += wv * row[ix0 + j * stride];
                            }
                        }
                    }
                }
            }
        });
}

/// ONNX `Conv`, in either layout (channels last: through channels-first copies).
pub(crate) fn conv(x: &Array, w: &Array, b: Option<&Array>, attrs: &ConvAttrs) -> R<Array> {
    if attrs.layout == Layout::Nhwc {
        let first = |a: &Array| transpose(a, &to_channels_first(a.rank()));
        let nchw = ConvAttrs {
            layout: Layout::Nchw,
            ..attrs.clone()
        };
        let y = conv(&first(x)?, &first(w)?, b, &nchw)?;
        return transpose(&y, &to_channels_last(y.rank()));
    }
    let bias = b.map(|b| b.data.to_f32s());
    let (out, shape) = conv_f32(
        &x.data.f32s(),
        &x.shape,
        &w.data.f32s(),
        &w.shape,
        bias.as_deref(),
        attrs,
    )?;
    Ok(Array::new(shape, Data::from_f32s(x.dtype(), out)))
}

/// ONNX `ConvTranspose`: `x` is `[n, c, in...]`, `w` is `[c, m/group, k...]`.
pub(crate) fn conv_transpose(
    x: &Array,
    w: &Array,
    b: Option<&Array>,
    attrs: &ConvTransposeAttrs,
) -> R<Array> {
    let a = &attrs.conv;
    if x.rank() < 3 || w.rank() != x.rank() {
        return Err(format!(
            "input {:?} and weight {:?} must have equal rank ≥ 3",
            x.shape, w.shape
        ));
    }
    let spatial = x.rank() - 2;
    let (n, c) = (x.shape[0], x.shape[1]);
    let group = a.group.max(1) as usize;
    if c % group != 0 || w.shape[0] != c {
        return Err(format!(
            "input channels {c}, weight {:?} and group {group} do not agree",
            w.shape
        ));
    }
    let mg = w.shape[1];
    let m = mg * group;
    let cg = c / group;
    let kernel: Vec<usize> = if a.kernel_shape.is_empty() {
        w.shape[2..].to_vec()
    } else {
        a.kernel_shape.iter().map(|&k| k as usize).collect()
    };
    let strides_ = or_ones(&a.strides, spatial);
    let dilations = or_ones(&a.dilations, spatial);
    let output_padding: Vec<i64> = if attrs.output_padding.is_empty() {
        vec![0; spatial]
    } else {
        attrs.output_padding.clone()
    };
    let input = &x.shape[2..];
    let mut pad_begin = vec![0i64; spatial];
    let mut output = vec![0usize; spatial];
    for d in 0..spatial {
        let eff = ((kernel[d] - 1) * dilations[d] + 1) as i64;
        let full = strides_[d] as i64 * (input[d] as i64 - 1) + output_padding[d] + eff;
        if !attrs.output_shape.is_empty()
            || matches!(a.auto_pad, AutoPad::SameUpper | AutoPad::SameLower)
        {
            let target = if attrs.output_shape.is_empty() {
                input[d] as i64 * strides_[d] as i64
            } else {
                attrs.output_shape[attrs.output_shape.len() - spatial + d]
            };
            let total = (full - target).max(0);
            pad_begin[d] = if a.auto_pad == AutoPad::SameUpper {
                total / 2
            } else {
                total - total / 2
            };
            output[d] = target as usize;
        } else {
            let (begin, end) = if a.pads.is_empty() || a.auto_pad == AutoPad::Valid {
                (0, 0)
            } else {
                (a.pads[d], a.pads[d + spatial])
            };
            pad_begin[d] = begin;
            let size = full - begin - end;
            if size < 0 {
                return Err(format!("pads {:?} leave no output", a.pads));
            }
            output[d] = size as usize;
        }
    }
    let kernel_len: usize = kernel.iter().product();
    let in_len: usize = input.iter().product();
    let out_len: usize = output.iter().product();
    let xv = x.data.f32s();
    let wv = w.data.f32s();
    let mut out = vec![0f32; n * m * out_len];
    let in_strides = strides(input);
    let out_strides = strides(&output);
    let kernel_strides = strides(&kernel);
    for bi in 0..n {
        for gi in 0..group {
            let image = &xv[(bi * c + gi * cg) * in_len..(bi * c + (gi + 1) * cg) * in_len];
            let weights = &wv[gi * cg * mg * kernel_len..(gi + 1) * cg * mg * kernel_len];
            let mut col = vec![0f32; mg * kernel_len * in_len];
            matmul_into(
                mg * kernel_len,
                in_len,
                cg,
                Mat::transposed(weights, mg * kernel_len),
                Mat::rows(image, in_len),
                &mut col,
                false,
                true,
            );
            let dst = &mut out[(bi * m + gi * mg) * out_len..(bi * m + (gi + 1) * mg) * out_len];
            for (row, src) in col.chunks(in_len.max(1)).enumerate() {
                let (oc, kidx) = (row / kernel_len, row % kernel_len);
                let plane = &mut dst[oc * out_len..(oc + 1) * out_len];
                'pixel: for (i, &v) in src.iter().enumerate() {
                    let mut offset = 0usize;
                    for d in 0..spatial {
                        let k = (kidx / kernel_strides[d]) % kernel[d];
                        let p = (i / in_strides[d]) % input[d];
                        let o = (p * strides_[d] + k * dilations[d]) as i64 - pad_begin[d];
                        if o < 0 || o as usize >= output[d] {
                            continue 'pixel;
                        }
                        offset += o as usize * out_strides[d];
                    }
                    plane[offset] += v;
                }
            }
        }
    }
    if let Some(b) = b {
        let bias = b.data.to_f32s();
        for (row, chunk) in out.chunks_mut(out_len.max(1)).enumerate() {
            let bv = bias[row % m];
            chunk.iter_mut().for_each(|v| *v += bv);
        }
    }
    let mut shape = vec![n, m];
    shape.extend(output);
    Ok(Array::new(shape, Data::from_f32s(x.dtype(), out)))
}

//! Sampling at computed locations: `GridSample`, `AffineGrid`, `DeformConv`, `RoiAlign`,
//! `MaxRoiPool`, `Col2Im` and `NonMaxSuppression`.

use super::shape::index_map;
use super::{Args, R};
use crate::array::{strides, Array, Data};

fn cubic_coefficients(t: f64) -> [f64; 4] {
    let c = |x: f64| super::resize::cubic(x, -0.75);
    [c(t + 1.0), c(t), c(1.0 - t), c(2.0 - t)]
}

fn reflect(x: f64, lo: f64, hi: f64) -> f64 {
    let range = hi - lo;
    if range <= 0.0 {
        return lo;
    }
    if x < lo {
        let dx = lo - x;
        let n = (dx / range) as i64;
        let r = dx - n as f64 * range;
        if n % 2 == 0 {
            lo + r
        } else {
            hi - r
        }
    } else if x > hi {
        let dx = x - hi;
        let n = (dx / range) as i64;
        let r = dx - n as f64 * range;
        if n % 2 == 0 {
            hi - r
        } else {
            lo + r
        }
    } else {
        x
    }
}

/// ONNX `GridSample` over any number of spatial dims.
pub(crate) fn grid_sample(
    x: &Array,
    grid: &Array,
    align_corners: bool,
    mode: &str,
    padding: &str,
) -> R<Array> {
    let rank = x.rank();
    if rank < 3
        || grid.rank() != rank
        || grid.shape[rank - 1] != rank - 2
        || grid.shape[0] != x.shape[0]
    {
        return Err(format!(
            "input {:?} and grid {:?} do not agree",
            x.shape, grid.shape
        ));
    }
    let dims = &x.shape[2..];
    let nd = dims.len();
    let (n, c) = (x.shape[0], x.shape[1]);
    let out_spatial = &grid.shape[1..rank - 1];
    let points: usize = out_spatial.iter().product();
    let plane: usize = dims.iter().product();
    let st = strides(dims);
    let values = x.data.to_f64s();
    let g = grid.data.to_f64s();
    let border: Vec<(f64, f64)> = dims
        .iter()
        .map(|&d| {
            if align_corners {
                (0.0, d as f64 - 1.0)
            } else {
                (-0.5, d as f64 - 0.5)
            }
        })
        .collect();
    let read = |base: usize, index: &[i64]| -> f64 {
        let mut offset = 0;
        for (k, &i) in index.iter().enumerate() {
            let d = dims[k] as i64;
            let i = match padding {
                "border" => i.clamp(0, d - 1),
                "reflection" => reflect(i as f64, border[k].0, border[k].1) as i64,
                _ => {
                    if i < 0 || i >= d {
                        return 0.0;
                    }
                    i
                }
            };
            offset += i.clamp(0, d - 1) as usize * st[k];
        }
        values[base + offset]
    };
    let mut out = vec![0.0; n * c * points];
    for b in 0..n {
        for p in 0..points {
            let coords = &g[(b * points + p) * nd..(b * points + p + 1) * nd];
            // The grid lists x first: reverse to match the dims' order.
            let location: Vec<f64> = (0..nd)
                .map(|k| {
                    let v = coords[nd - 1 - k];
                    let len = dims[k] as f64;
                    let mut x = if align_corners {
                        (v + 1.0) / 2.0 * (len - 1.0)
                    } else {
                        ((v + 1.0) * len - 1.0) / 2.0
                    };
                    match padding {
                        "border" => x = x.clamp(0.0, len - 1.0),
                        "reflection" => x = reflect(x, border[k].0, border[k].1),
                        _ => {}
                    }
                    x
                })
                .collect();
            let taps: Vec<Vec<(i64, f64)>> = location
                .iter()
                .map(|&x| match mode {
                    "nearest" => vec![(x.round_ties_even() as i64, 1.0)],
                    "bicubic" | "cubic" => {
                        let f = x.floor();
                        let w = cubic_coefficients(x - f);
                        (0..4).map(|j| (f as i64 - 1 + j as i64, w[j])).collect()
                    }
                    _ => {
                        let f = x.floor();
                        vec![(f as i64, 1.0 - (x - f)), (f as i64 + 1, x - f)]
                    }
                })
                .collect();
            let counts: Vec<usize> = taps.iter().map(Vec::len).collect();
            for ch in 0..c {
                let base = (b * c + ch) * plane;
                let mut sum = 0.0;
                index_map(&counts, |pick| {
                    let index: Vec<i64> = pick
                        .iter()
                        .enumerate()
                        .map(|(k, &j)| taps[k][j].0)
                        .collect();
                    let weight: f64 = pick
                        .iter()
                        .enumerate()
                        .map(|(k, &j)| taps[k][j].1)
                        .product();
                    if weight != 0.0 {
                        sum += weight * read(base, &index);
                    }
                });
                out[(b * c + ch) * points + p] = sum;
            }
        }
    }
    let mut shape = vec![n, c];
    shape.extend(out_spatial);
    Ok(Array::new(shape, Data::from_f64s(x.dtype(), out, false)))
}

/// ONNX `AffineGrid`: `theta` `[n, 2, 3]` or `[n, 3, 4]`, size `[n, c, (d,) h, w]`.
pub(crate) fn affine_grid(theta: &Array, size: &[i64], align_corners: bool) -> R<Array> {
    let nd = size
        .len()
        .checked_sub(2)
        .filter(|&d| d == 2 || d == 3)
        .ok_or("size must have 4 or 5 entries")?;
    if theta.shape != [size[0].max(0) as usize, nd, nd + 1] {
        return Err(format!(
            "theta {:?} does not match size {size:?}",
            theta.shape
        ));
    }
    let t = theta.data.to_f64s();
    let spatial: Vec<usize> = size[2..].iter().map(|&d| d.max(0) as usize).collect();
    let base = |i: usize, len: usize| -> f64 {
        if align_corners {
            if len <= 1 {
                0.0
            } else {
                -1.0 + 2.0 * i as f64 / (len - 1) as f64
            }
        } else {
            (2.0 * i as f64 + 1.0) / len as f64 - 1.0
        }
    };
    let n = size[0].max(0) as usize;
    let mut out = Vec::new();
    for b in 0..n {
        let m = &t[b * nd * (nd + 1)..(b + 1) * nd * (nd + 1)];
        index_map(&spatial, |ix| {
            // Coordinates in x, y(, z) order: the last spatial axis is x.
            let mut p: Vec<f64> = (0..nd)
                .map(|k| base(ix[nd - 1 - k], spatial[nd - 1 - k]))
                .collect();
            p.push(1.0);
            for r in 0..nd {
                out.push((0..=nd).map(|k| m[r * (nd + 1) + k] * p[k]).sum::<f64>());
            }
        });
    }
    let mut shape = vec![n];
    shape.extend(&spatial);
    shape.push(nd);
    Ok(Array::new(
        shape,
        Data::from_f64s(theta.dtype(), out, false),
    ))
}

/// The two taps along one axis of length `n` that bilinear sampling at `v` reads, and the
/// weight of the second: `v` is clamped to `[0, n-1]`, where both taps are the last index.
fn bilinear_taps(v: f64, n: usize) -> (usize, usize, f64) {
    let v = v.max(0.0);
    let lo = v as usize;
    if lo >= n - 1 {
        (n - 1, n - 1, 0.0)
    } else {
        (lo, lo + 1, v - lo as f64)
    }
}

/// ONNX `RoiAlign`; inputs `x, rois, batch_indices`.
pub(crate) fn roi_align(
    args: &Args,
    half_pixel: bool,
    max_mode: bool,
    pooled: (usize, usize),
    sampling_ratio: i64,
    scale: f32,
) -> R<Array> {
    let x = args.tensor(0)?;
    let [_, c, h, w] = x.shape[..] else {
        return Err(format!("input must be 4-D, found {:?}", x.shape));
    };
    let rois = args.tensor(1)?.data.to_f64s();
    let batch = args.tensor(2)?.data.to_i64s();
    let r = batch.len();
    let values = x.data.to_f64s();
    let (ph_n, pw_n) = pooled;
    let scale = f64::from(scale);
    let offset = if half_pixel { 0.5 } else { 0.0 };
    let mut out = vec![0.0; r * c * ph_n * pw_n];
    for i in 0..r {
        let roi = &rois[i * 4..i * 4 + 4];
        let (sw, sh) = (roi[0] * scale - offset, roi[1] * scale - offset);
        let (ew, eh) = (roi[2] * scale - offset, roi[3] * scale - offset);
        let (mut rw, mut rh) = (ew - sw, eh - sh);
        if !half_pixel {
            rw = rw.max(1.0);
            rh = rh.max(1.0);
        }
        let (bh, bw) = (rh / ph_n as f64, rw / pw_n as f64);
        let gh = if sampling_ratio > 0 {
            sampling_ratio as usize
        } else {
            (rh / ph_n as f64).ceil() as usize
        };
        let gw = if sampling_ratio > 0 {
            sampling_ratio as usize
        } else {
            (rw / pw_n as f64).ceil() as usize
        };
        let count = (gh * gw).max(1) as f64;
        let image = batch[i].max(0) as usize;
        for ch in 0..c {
            let plane = &values[(image * c + ch) * h * w..(image * c + ch + 1) * h * w];
            for ph in 0..ph_n {
                for pw in 0..pw_n {
                    let mut acc = if max_mode { f64::NEG_INFINITY } else { 0.0 };
                    let mut any = false;
                    for iy in 0..gh {
                        let y = sh + ph as f64 * bh + (iy as f64 + 0.5) * bh / gh as f64;
                        for ix in 0..gw {
                            let x = sw + pw as f64 * bw + (ix as f64 + 0.5) * bw / gw as f64;
                            let sample = if y < -1.0 || y > h as f64 || x < -1.0 || x > w as f64 {
                                [0.0; 4]
                            } else {
                                let (y0, y1, ly) = bilinear_taps(y, h);
                                let (x0, x1, lx) = bilinear_taps(x, w);
                                let (hy, hx) = (1.0 - ly, 1.0 - lx);
                                [
                                    hy * hx * plane[y0 * w + x0],
                                    hy * lx * plane[y0 * w + x1],
                                    ly * hx * plane[y1 * w + x0],
                                    ly * lx * plane[y1 * w + x1],
                                ]
                            };
                            if max_mode {
                                let m = sample.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                                acc = if any { acc.max(m) } else { m };
                                any = true;
                            } else {
                                acc += sample.iter().sum::<f64>();
                            }
                        }
                    }
                    out[((i * c + ch) * ph_n + ph) * pw_n + pw] = if max_mode {
                        if any {
                            acc
                        } else {
                            0.0
                        }
                    } else {
                        acc / count
                    };
                }
            }
        }
    }
    Ok(Array::new(
        vec![r, c, ph_n, pw_n],
        Data::from_f64s(x.dtype(), out, false),
    ))
}

/// ONNX `MaxRoiPool`: rois are `[batch, x1, y1, x2, y2]`.
pub(crate) fn max_roi_pool(x: &Array, rois: &Array, pooled: &[i64], scale: f32) -> R<Array> {
    let [_, c, h, w] = x.shape[..] else {
        return Err(format!("input must be 4-D, found {:?}", x.shape));
    };
    let [ph_n, pw_n] = pooled[..] else {
        return Err("pooled_shape must have 2 entries".into());
    };
    let (ph_n, pw_n) = (ph_n.max(1) as usize, pw_n.max(1) as usize);
    let r = rois.data.to_f64s();
    let count = r.len() / 5;
    let values = x.data.to_f64s();
    let scale = f64::from(scale);
    let mut out = vec![0.0; count * c * ph_n * pw_n];
    for i in 0..count {
        let roi = &r[i * 5..i * 5 + 5];
        let image = roi[0] as usize;
        let (sw, sh) = (
            (roi[1] * scale).round() as i64,
            (roi[2] * scale).round() as i64,
        );
        let (ew, eh) = (
            (roi[3] * scale).round() as i64,
            (roi[4] * scale).round() as i64,
        );
        let (rh, rw) = ((eh - sh + 1).max(1) as f64, (ew - sw + 1).max(1) as f64);
        let (bh, bw) = (rh / ph_n as f64, rw / pw_n as f64);
        for ch in 0..c {
            let plane = &values[(image * c + ch) * h * w..(image * c + ch + 1) * h * w];
            for ph in 0..ph_n {
                let hs = ((ph as f64 * bh).floor() as i64 + sh).clamp(0, h as i64) as usize;
                let he = (((ph + 1) as f64 * bh).ceil() as i64 + sh).clamp(0, h as i64) as usize;
                for pw in 0..pw_n {
                    let ws = ((pw as f64 * bw).floor() as i64 + sw).clamp(0, w as i64) as usize;
                    let we =
                        (((pw + 1) as f64 * bw).ceil() as i64 + sw).clamp(0, w as i64) as usize;
                    let mut m = f64::NEG_INFINITY;
                    for yy in hs..he {
                        for xx in ws..we {
                            m = m.max(plane[yy * w + xx]);
                        }
                    }
                    out[((i * c + ch) * ph_n + ph) * pw_n + pw] =
                        if m.is_finite() { m } else { 0.0 };
                }
            }
        }
    }
    Ok(Array::new(
        vec![count, c, ph_n, pw_n],
        Data::from_f64s(x.dtype(), out, false),
    ))
}

/// ONNX `Col2Im`; inputs `x [n, c·prod(block), blocks], image_shape, block_shape`.
pub(crate) fn col2im(args: &Args, dilations: &[i64], pads: &[i64], strides_: &[i64]) -> R<Array> {
    let x = args.tensor(0)?;
    let image: Vec<usize> = args.ints(1)?.iter().map(|&v| v.max(0) as usize).collect();
    let block: Vec<usize> = args.ints(2)?.iter().map(|&v| v.max(1) as usize).collect();
    let nd = image.len();
    let [n, cb, l] = x.shape[..] else {
        return Err(format!("input must be 3-D, found {:?}", x.shape));
    };
    let kernel: usize = block.iter().product();
    if block.len() != nd || cb % kernel != 0 {
        return Err(format!("block {block:?} does not divide {cb} rows"));
    }
    let c = cb / kernel;
    let at = |v: &[i64], i: usize, d: i64| v.get(i).copied().unwrap_or(d);
    let counts: Vec<usize> = (0..nd)
        .map(|d| {
            let span = image[d] as i64 + at(pads, d, 0) + at(pads, d + nd, 0)
                - at(dilations, d, 1) * (block[d] as i64 - 1)
                - 1;
            (span / at(strides_, d, 1) + 1).max(0) as usize
        })
        .collect();
    if counts.iter().product::<usize>() != l {
        return Err(format!("{l} blocks do not tile the image {image:?}"));
    }
    let values = x.data.to_f64s();
    let plane: usize = image.iter().product();
    let ist = strides(&image);
    let bst = strides(&block);
    let cst = strides(&counts);
    let mut out = vec![0.0; n * c * plane];
    for b in 0..n {
        for ch in 0..c {
            for k in 0..kernel {
                for p in 0..l {
                    let mut offset = 0;
                    let mut inside = true;
                    for d in 0..nd {
                        let kd = (k / bst[d]) % block[d];
                        let pd = (p / cst[d]) % counts[d];
                        let i = pd as i64 * at(strides_, d, 1) + kd as i64 * at(dilations, d, 1)
                            - at(pads, d, 0);
                        if i < 0 || i >= image[d] as i64 {
                            inside = false;
                            break;
                        }
                        offset += i as usize * ist[d];
                    }
                    if inside {
                        out[(b * c + ch) * plane + offset] +=
                            values[((b * cb) + ch * kernel + k) * l + p];
                    }
                }
            }
        }
    }
    let mut shape = vec![n, c];
    shape.extend(&image);
    Ok(Array::new(shape, Data::from_f64s(x.dtype(), out, false)))
}

/// ONNX `NonMaxSuppression`: `[selected, 3]` rows of (batch, class, box).
pub(crate) fn non_max_suppression(args: &Args, center_point_box: i64) -> R<Array> {
    let boxes = args.tensor(0)?;
    let scores = args.tensor(1)?;
    let [batches, n, 4] = boxes.shape[..] else {
        return Err(format!(
            "boxes must be [batch, n, 4], found {:?}",
            boxes.shape
        ));
    };
    let [_, classes, _] = scores.shape[..] else {
        return Err(format!(
            "scores must be [batch, classes, n], found {:?}",
            scores.shape
        ));
    };
    let limit = args
        .opt_ints(2)?
        .and_then(|v| v.first().copied())
        .unwrap_or(0)
        .max(0) as usize;
    let scalar = |i: usize| -> R<Option<f64>> {
        Ok(args
            .opt_tensor(i)?
            .and_then(|t| t.data.to_f64s().first().copied()))
    };
    let iou_threshold = scalar(3)?.unwrap_or(0.0);
    let score_threshold = scalar(4)?;
    let b = boxes.data.to_f64s();
    let s = scores.data.to_f64s();
    let corners = |i: usize| -> [f64; 4] {
        let v = &b[i * 4..i * 4 + 4];
        if center_point_box == 1 {
            [
                v[1] - v[3] / 2.0,
                v[0] - v[2] / 2.0,
                v[1] + v[3] / 2.0,
                v[0] + v[2] / 2.0,
            ]
        } else {
            [
                v[0].min(v[2]),
                v[1].min(v[3]),
                v[0].max(v[2]),
                v[1].max(v[3]),
            ]
        }
    };
    let iou = |p: [f64; 4], q: [f64; 4]| -> f64 {
        let ih = (p[2].min(q[2]) - p[0].max(q[0])).max(0.0);
        let iw = (p[3].min(q[3]) - p[1].max(q[1])).max(0.0);
        let inter = ih * iw;
        let union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter;
        if union <= 0.0 {
            0.0
        } else {
            inter / union
        }
    };
    let mut selected = Vec::new();
    for bi in 0..batches {
        for ci in 0..classes {
            let score = |i: usize| s[(bi * classes + ci) * n + i];
            let mut order: Vec<usize> = (0..n)
                .filter(|&i| score_threshold.is_none_or(|t| score(i) > t))
                .collect();
            order.sort_by(|&p, &q| score(q).total_cmp(&score(p)).then(p.cmp(&q)));
            let mut kept: Vec<usize> = Vec::new();
            for i in order {
                if kept.len() >= limit {
                    break;
                }
                let bx = corners(bi * n + i);
                if kept
                    .iter()
                    .all(|&k| iou(bx, corners(bi * n + k)) <= iou_threshold)
                {
                    kept.push(i);
                }
            }
            selected.extend(
                kept.into_iter()
                    .flat_map(|i| [bi as i64, ci as i64, i as i64]),
            );
        }
    }
    Ok(Array::i64(vec![selected.len() / 3, 3], selected))
}

/// The bilinear sample of a row-major `h×w` plane at `(y, x)`, pixels outside reading zero.
fn bilinear_zero_padded(plane: &[f64], h: usize, w: usize, y: f64, x: f64) -> f64 {
    let (y0, x0) = (y.floor(), x.floor());
    let (fy, fx) = (y - y0, x - x0);
    let at = |yy: f64, xx: f64| {
        if yy < 0.0 || xx < 0.0 || yy >= h as f64 || xx >= w as f64 {
            0.0
        } else {
            plane[yy as usize * w + xx as usize]
        }
    };
    at(y0, x0) * (1.0 - fy) * (1.0 - fx)
        + at(y0, x0 + 1.0) * (1.0 - fy) * fx
        + at(y0 + 1.0, x0) * fy * (1.0 - fx)
        + at(y0 + 1.0, x0 + 1.0) * fy * fx
}

/// ONNX `DeformConv` (2-D): inputs `x [N, C, H, W], w [M, C/group, kh, kw], offset [N,
/// G·kh·kw·2, oh, ow], b? [M], mask? [N, G·kh·kw, oh, ow]`, each tap sampled at its offset.
pub(crate) fn deform_conv(args: &Args, attrs: &sparkc_ir::op::DeformConvAttrs) -> R<Array> {
    let (x, w, offset) = (args.tensor(0)?, args.tensor(1)?, args.tensor(2)?);
    let (bias, mask) = (args.opt_tensor(3)?, args.opt_tensor(4)?);
    if x.rank() != 4 {
        return Err(format!(
            "only 2-D deformable convolutions are defined; x has shape {:?}",
            x.shape
        ));
    }
    let g = super::conv::conv_geometry(&x.shape, &w.shape, &attrs.conv())?;
    let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (m, (kh, kw), (oh, ow)) = (
        w.shape[0],
        (g.kernel[0], g.kernel[1]),
        (g.output[0], g.output[1]),
    );
    let group = usize::try_from(attrs.group).ok().filter(|&v| v > 0);
    let offset_group = usize::try_from(attrs.offset_group).ok().filter(|&v| v > 0);
    let (Some(group), Some(offset_group)) = (group, offset_group) else {
        return Err(format!(
            "group {} and offset_group {} must be positive",
            attrs.group, attrs.offset_group
        ));
    };
    if w.shape[1] * group != c || m % group != 0 || c % offset_group != 0 {
        return Err(format!(
            "x {:?}, w {:?}, group {group} and offset_group {offset_group} do not agree",
            x.shape, w.shape
        ));
    }
    let taps = kh * kw;
    if offset.shape != [n, offset_group * taps * 2, oh, ow] {
        return Err(format!(
            "offset must have shape {:?}, found {:?}",
            [n, offset_group * taps * 2, oh, ow],
            offset.shape
        ));
    }
    if let Some(mask) = mask {
        if mask.shape != [n, offset_group * taps, oh, ow] {
            return Err(format!(
                "mask must have shape {:?}, found {:?}",
                [n, offset_group * taps, oh, ow],
                mask.shape
            ));
        }
    }
    if let Some(b) = bias {
        if b.shape != [m] {
            return Err(format!("bias must have shape [{m}], found {:?}", b.shape));
        }
    }
    let (xv, wv, off) = (x.data.to_f64s(), w.data.to_f64s(), offset.data.to_f64s());
    let maskv = mask.map(|k| k.data.to_f64s());
    let biasv = bias.map(|b| b.data.to_f64s());
    let (c_per_group, m_per_group, c_per_offset) = (c / group, m / group, c / offset_group);
    let plane = oh * ow;
    let mut out = vec![0.0; n * m * plane];
    for b in 0..n {
        for oc in 0..m {
            let gi = oc / m_per_group;
            for (p, o) in out[(b * m + oc) * plane..(b * m + oc + 1) * plane]
                .iter_mut()
                .enumerate()
            {
                let (i, j) = (p / ow, p % ow);
                let mut acc = biasv.as_ref().map_or(0.0, |v| v[oc]);
                for ic_local in 0..c_per_group {
                    let ic = gi * c_per_group + ic_local;
                    let og = ic / c_per_offset;
                    let input = &xv[(b * c + ic) * h * wd..(b * c + ic + 1) * h * wd];
                    for t in 0..taps {
                        let (ki, kj) = (t / kw, t % kw);
                        let at = |k: usize| ((b * offset_group + og) * taps * 2 + k) * plane + p;
                        let y = (i * g.strides[0] + ki * g.dilations[0]) as f64
                            - g.pad_begin[0] as f64
                            + off[at(2 * t)];
                        let xx = (j * g.strides[1] + kj * g.dilations[1]) as f64
                            - g.pad_begin[1] as f64
                            + off[at(2 * t + 1)];
                        let scale = maskv
                            .as_ref()
                            .map_or(1.0, |k| k[((b * offset_group + og) * taps + t) * plane + p]);
                        let weight = wv[(oc * c_per_group + ic_local) * taps + t];
                        acc += weight * scale * bilinear_zero_padded(input, h, wd, y, xx);
                    }
                }
                *o = acc;
            }
        }
    }
    Ok(Array::new(
        vec![n, m, oh, ow],
        Data::from_f64s(x.dtype(), out, false),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;
    use sparkc_ir::op::DeformConvAttrs;

    fn run(inputs: Vec<Option<Array>>, attrs: &DeformConvAttrs) -> Array {
        let items = inputs
            .into_iter()
            .map(|a| a.map(|a| super::super::Arg::Owned(Value::Tensor(a))))
            .collect();
        deform_conv(&Args::new(items), attrs).expect("runs")
    }

    #[test]
    fn zero_offsets_give_the_plain_convolution_and_half_offsets_interpolate() {
        let attrs = DeformConvAttrs {
            dilations: vec![],
            group: 2,
            kernel_shape: vec![],
            offset_group: 2,
            pads: vec![1, 0, 1, 2],
            strides: vec![2, 1],
        };
        let x = Array::f32(
            vec![1, 4, 5, 6],
            (0..120).map(|i| (i % 11) as f32 - 5.0).collect(),
        );
        let w = Array::f32(
            vec![6, 2, 3, 2],
            (0..72).map(|i| (i % 7) as f32 * 0.25 - 0.5).collect(),
        );
        let b = Array::f32(vec![6], vec![0.5, -1.0, 0.0, 2.0, 1.5, -0.5]);
        let plain = super::super::conv::conv(&x, &w, Some(&b), &attrs.conv()).expect("conv");
        let [_, _, oh, ow] = plain.shape[..] else {
            panic!()
        };
        let offset = Array::f32(vec![1, 2 * 6 * 2, oh, ow], vec![0.0; 24 * oh * ow]);
        let deformed = run(
            vec![
                Some(x.clone()),
                Some(w.clone()),
                Some(offset),
                Some(b),
                None,
            ],
            &attrs,
        );
        assert_eq!(deformed.shape, plain.shape);
        for (d, p) in deformed.data.to_f64s().iter().zip(plain.data.to_f64s()) {
            assert!((d - p).abs() < 1e-4, "{d} vs {p}");
        }

        // One 1×1 tap moved half a pixel right reads the mean of two neighbours; the mask scales it.
        let single = DeformConvAttrs {
            dilations: vec![],
            group: 1,
            kernel_shape: vec![],
            offset_group: 1,
            pads: vec![],
            strides: vec![],
        };
        let x = Array::f32(vec![1, 1, 1, 3], vec![1.0, 3.0, 7.0]);
        let w = Array::f32(vec![1, 1, 1, 1], vec![1.0]);
        let offset = Array::f32(vec![1, 2, 1, 3], vec![0.0, 0.0, 0.0, 0.5, 0.5, 0.5]);
        let mask = Array::f32(vec![1, 1, 1, 3], vec![1.0, 2.0, 1.0]);
        let y = run(
            vec![Some(x), Some(w), Some(offset), None, Some(mask)],
            &single,
        );
        assert_eq!(y.data.to_f64s(), vec![2.0, 10.0, 3.5]);
    }
}

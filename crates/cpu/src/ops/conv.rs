//! Convolutions: N-d `Conv` as im2col + GEMM (depthwise direct), `ConvTranspose` as GEMM + col2im.

use super::elementwise::min_tasks;
use super::linalg::{gemm_block, matmul_into, Mat, SendPtr};
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
pub(crate) fn valid_range(taps: &[Option<usize>]) -> (usize, usize) {
    let start = taps.iter().position(Option::is_some).unwrap_or(taps.len());
    let end = taps
        .iter()
        .rposition(Option::is_some)
        .map_or(start, |e| e + 1);
    (start, end)
}

/// `im2col` over one convolution's geometry, with what every tile needs worked out once.
struct Unroller<'a> {
    geometry: &'a Geometry,
    taps: &'a [Vec<Vec<Option<usize>>>],
    /// 2-D only, per horizontal tap: the output columns it reaches and the input column the
    /// first of them reads.
    columns: Vec<Option<(usize, usize, usize)>>,
    in_strides: Vec<usize>,
    out_strides: Vec<usize>,
    kernel_strides: Vec<usize>,
}

impl<'a> Unroller<'a> {
    fn new(g: &'a Geometry, taps: &'a [Vec<Vec<Option<usize>>>]) -> Unroller<'a> {
        let columns = if g.input.len() == 2 {
            taps[1]
                .iter()
                .map(|t| {
                    let (x0, x1) = valid_range(t);
                    Some((x0, x1, t.get(x0).copied().flatten()?))
                })
                .collect()
        } else {
            Vec::new()
        };
        Unroller {
            geometry: g,
            taps,
            columns,
            in_strides: strides(&g.input),
            out_strides: strides(&g.output),
            kernel_strides: strides(&g.kernel),
        }
    }

    /// Unrolls output positions `c0..c0 + width` of one image `[channels, in...]`: row
    /// `(channel, tap)` of `dst` (`channels·k × width`) holds the input each position reads at
    /// that tap, or zero in the padding.
    fn tile(&self, image: &[f32], c0: usize, width: usize, dst: &mut [f32]) {
        let g = self.geometry;
        let kernel_len: usize = g.kernel.iter().product();
        let in_len: usize = g.input.iter().product();
        for (row, dst) in dst.chunks_mut(width).enumerate() {
            let (c, tap) = (row / kernel_len, row % kernel_len);
            let src = &image[c * in_len..(c + 1) * in_len];
            if g.input.len() == 2 {
                self.row_2d(src, tap, c0, dst);
            } else {
                self.row(src, tap, c0, dst);
            }
        }
    }

    /// One row of a 2-D convolution, output row by output row.
    fn row_2d(&self, src: &[f32], tap: usize, c0: usize, dst: &mut [f32]) {
        let g = self.geometry;
        let (iw, ow, kw) = (g.input[1], g.output[1], g.kernel[1]);
        let (ky, kx) = (tap / kw, tap % kw);
        let Some((x0, x1, ix0)) = self.columns[kx] else {
            dst.fill(0.0);
            return;
        };
        let stride = g.strides[1];
        let c1 = c0 + dst.len();
        let mut p = c0;
        while p < c1 {
            let (oy, xa) = (p / ow, p % ow);
            let xb = ow.min(xa + (c1 - p));
            let out = &mut dst[p - c0..p - c0 + (xb - xa)];
            let (lo, hi) = (x0.clamp(xa, xb), x1.clamp(xa, xb));
            match self.taps[0][ky][oy] {
                Some(iy) if lo < hi => {
                    out[..lo - xa].fill(0.0);
                    out[hi - xa..].fill(0.0);
                    let in_row = &src[iy * iw..(iy + 1) * iw];
                    let first = ix0 + (lo - x0) * stride;
                    let inside = &mut out[lo - xa..hi - xa];
                    if stride == 1 {
                        inside.copy_from_slice(&in_row[first..first + (hi - lo)]);
                    } else {
                        for (j, o) in inside.iter_mut().enumerate() {
                            *o = in_row[first + j * stride];
                        }
                    }
                }
                _ => out.fill(0.0),
            }
            p = xb + oy * ow;
        }
    }

    /// One row of an N-d convolution, element by element.
    fn row(&self, src: &[f32], tap: usize, c0: usize, dst: &mut [f32]) {
        let g = self.geometry;
        for (j, v) in dst.iter_mut().enumerate() {
            let o = c0 + j;
            let mut offset = 0;
            let mut inside = true;
            for d in 0..g.input.len() {
                let k = (tap / self.kernel_strides[d]) % g.kernel[d];
                let p = (o / self.out_strides[d]) % g.output[d];
                match self.taps[d][k][p] {
                    Some(i) => offset += i * self.in_strides[d],
                    None => {
                        inside = false;
                        break;
                    }
                }
            }
            *v = if inside { src[offset] } else { 0.0 };
        }
    }
}

/// Work applied to the finished pieces of a convolution's output while they are in cache: each
/// piece comes with the flat index of its first element.
pub(crate) type Epilogue<'a> = &'a (dyn Fn(&mut [(usize, &mut [f32])]) -> R<()> + Sync);

/// N-d convolution of f32 data; `x` is `[n, c, in...]`, `w` is `[m, c/group, k...]`.
pub(crate) fn conv_f32(
    x: &[f32],
    x_shape: &[usize],
    w: &[f32],
    w_shape: &[usize],
    bias: Option<&[f32]>,
    attrs: &ConvAttrs,
    epilogue: Option<Epilogue>,
) -> R<(Vec<f32>, Vec<usize>)> {
    let g = conv_geometry(x_shape, w_shape, attrs)?;
    let (n, c) = (x_shape[0], x_shape[1]);
    let m = w_shape[0];
    let group = attrs.group.max(1) as usize;
    if c % group != 0 || m % group != 0 || w_shape[1] * group != c {
        return Err(format!(
            "input channels {c}, weight {w_shape:?} and group {group} do not agree"
        ));
    }
    let (cg, mg) = (c / group, m / group);
    if let Some(bias) = bias {
        if bias.len() != m {
            return Err(format!(
                "bias has {} values for {m} output channels",
                bias.len()
            ));
        }
    }
    let out_len: usize = g.output.iter().product();
    let mut shape = vec![n, m];
    shape.extend(&g.output);
    let mut out = vec![0f32; n * m * out_len];
    if group == c && mg == 1 && g.input.len() == 2 {
        depthwise(x, w, bias, &g, n, c, &mut out, epilogue)?;
    } else {
        let problem = Problem {
            x,
            w,
            bias,
            geometry: &g,
            channels: cg,
            maps: mg,
            images: n * group,
            group,
        };
        if problem.direct_suits() {
            problem.run_direct(&mut out, epilogue)?;
        } else {
            problem.run(&mut out, epilogue)?;
        }
    }
    Ok((out, shape))
}

/// One grouped convolution: `images` (batch × group) products of `maps × channels·k` weights
/// by `channels·k × out` unrolled inputs, as tiled GEMMs here or directly (`conv_direct`).
pub(super) struct Problem<'a> {
    pub x: &'a [f32],
    pub w: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub geometry: &'a Geometry,
    /// Input channels per group.
    pub channels: usize,
    /// Output channels per group.
    pub maps: usize,
    /// Batch × group.
    pub images: usize,
    pub group: usize,
}

/// Floats of unrolled input, and of output, per tile: the tile stays in the core's L2 while
/// its GEMM and epilogue run.
const TILE_FLOATS: usize = 48 * 1024;

impl Problem<'_> {
    /// How many tasks a convolution of `macs` multiply-adds should be cut into.
    pub(super) fn wanted_tasks(macs: usize) -> usize {
        if macs < super::linalg::PARALLEL_MACS {
            1
        } else {
            4 * rayon::current_num_threads()
        }
    }

    /// Runs `task` for `0..tasks`, in parallel when there is more than one, each worker
    /// keeping its own scratch.
    pub(super) fn run_tasks<S: Default + Send>(
        tasks: usize,
        task: impl Fn(usize, &mut S) -> R<()> + Sync + Send,
    ) -> R<()> {
        if tasks == 1 {
            return task(0, &mut S::default());
        }
        (0..tasks)
            .into_par_iter()
            .try_for_each_init(S::default, |scratch, t| task(t, scratch))
    }

    /// Fills `out` (`[images, maps, out...]`) tile by tile, each tile's unrolling, product, bias
    /// and epilogue done by one task while the tile is in cache.
    fn run(&self, out: &mut [f32], epilogue: Option<Epilogue>) -> R<()> {
        let g = self.geometry;
        let kernel_len: usize = g.kernel.iter().product();
        let in_len: usize = g.input.iter().product();
        let out_len: usize = g.output.iter().product();
        let depth = self.channels * kernel_len;
        if self.images == 0 || self.maps == 0 || out_len == 0 {
            return Ok(());
        }
        let pointwise = kernel_len == 1
            && g.strides.iter().all(|&s| s == 1)
            && g.pad_begin.iter().all(|&p| p == 0)
            && g.output == g.input;
        let wanted = Self::wanted_tasks(self.images * self.maps * out_len * depth);
        // Column tiles bounded by cache, then split further (columns, then rows) until there
        // are enough tasks for the threads.
        let mut col_tiles = out_len.div_ceil((TILE_FLOATS / depth.max(self.maps)).max(64));
        col_tiles = col_tiles.max(wanted.div_ceil(self.images).min(out_len.div_ceil(64)));
        let width = out_len
            .div_ceil(col_tiles)
            .next_multiple_of(16)
            .min(out_len);
        let col_tiles = out_len.div_ceil(width);
        let row_blocks = wanted
            .div_ceil(self.images * col_tiles)
            .clamp(1, self.maps.div_ceil(16));
        let rows = self.maps.div_ceil(row_blocks);
        let row_blocks = self.maps.div_ceil(rows);
        let taps = g.taps();
        let unroller = Unroller::new(g, &taps);
        let base = SendPtr(out.as_mut_ptr());
        let task = |t: usize, col: &mut Vec<f32>| -> R<()> {
            let (image, rest) = (t / (row_blocks * col_tiles), t % (row_blocks * col_tiles));
            let (r0, c0) = ((rest / col_tiles) * rows, (rest % col_tiles) * width);
            let (r1, c1) = ((r0 + rows).min(self.maps), (c0 + width).min(out_len));
            let (b, gi) = (image / self.group, image % self.group);
            let c = self.channels * self.group;
            let first = (b * c + gi * self.channels) * in_len;
            let source = &self.x[first..first + self.channels * in_len];
            let b_mat = if pointwise {
                Mat {
                    data: &source[c0..],
                    rs: in_len,
                    cs: 1,
                }
            } else {
                col.resize(depth * (c1 - c0), 0.0);
                unroller.tile(source, c0, c1 - c0, col);
                Mat::rows(col, c1 - c0)
            };
            let weights = &self.w[(gi * self.maps + r0) * depth..(gi * self.maps + r1) * depth];
            let tile = (image * self.maps + r0) * out_len + c0;
            // SAFETY: tasks cover disjoint (rows, columns) tiles of `out`, and this tile's last
            // element, `tile + (r1 - r0 - 1)·out_len + (c1 - c0)`, is inside it.
            unsafe {
                gemm_block(
                    r1 - r0,
                    c1 - c0,
                    depth,
                    Mat::rows(weights, depth),
                    b_mat,
                    base.at(tile),
                    out_len,
                    false,
                )
            };
            let mut pieces = Vec::with_capacity(r1 - r0);
            for r in r0..r1 {
                let start = (image * self.maps + r) * out_len + c0;
                // SAFETY: this row segment lies in this task's tile, which no other task touches.
                let piece = unsafe { std::slice::from_raw_parts_mut(base.at(start), c1 - c0) };
                if let Some(bias) = self.bias {
                    let v = bias[gi * self.maps + r];
                    piece.iter_mut().for_each(|p| *p += v);
                }
                pieces.push((start, piece));
            }
            epilogue.map_or(Ok(()), |epilogue| epilogue(&mut pieces))
        };
        Self::run_tasks(self.images * row_blocks * col_tiles, task)
    }
}

#[allow(clippy::too_many_arguments)]
fn depthwise(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    g: &Geometry,
    n: usize,
    c: usize,
    out: &mut [f32],
    epilogue: Option<Epilogue>,
) -> R<()> {
    let (oh, ow) = (g.output[0], g.output[1]);
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    if oh * ow == 0 {
        return Ok(());
    }
    let layout = PhaseLayout::new(g);
    let plane_len = oh * ow;
    let in_len = g.input[0] * g.input[1];
    out.par_chunks_mut(plane_len)
        .with_min_len(min_tasks(plane_len * kh * kw))
        .enumerate()
        .take(n * c)
        .try_for_each_init(
            || (Vec::new(), Vec::new()),
            |(phases, acc), (plane, dst)| {
                let ch = plane % c;
                let src = &x[plane * in_len..(plane + 1) * in_len];
                let weights = &w[ch * kh * kw..(ch + 1) * kh * kw];
                phases.resize(layout.len(), 0.0);
                layout.split(src, 0.0, phases);
                acc.resize(oh * layout.width, 0.0);
                sum_taps(&layout, phases, weights, acc);
                let b = bias.map_or(0.0, |b| b[ch]);
                for (drow, arow) in dst.chunks_mut(ow).zip(acc.chunks(layout.width)) {
                    drow.iter_mut().zip(arow).for_each(|(d, &a)| *d = a + b);
                }
                epilogue.map_or(Ok(()), |epilogue| epilogue(&mut [(plane * plane_len, dst)]))
            },
        )
}

/// A 2-D input plane, zero-padded and split into its `sy × sx` stride phases (phase `(py, px)`
/// holds the padded elements `[i·sy + py, j·sx + px]` as rows of `width`), so that each kernel
/// tap of a depthwise convolution is one contiguous multiply-add over every output at once.
pub(crate) struct PhaseLayout {
    input: [usize; 2],
    pad: [usize; 2],
    strides: [usize; 2],
    /// Row length of a phase, and of the accumulator (the columns past the output are unused).
    pub width: usize,
    /// Elements per phase, with room for the last tap's reads past the last row.
    phase_len: usize,
    /// Per tap, in weight order: the phase it reads and its offset there.
    pub taps: Vec<(usize, usize)>,
    /// Per column phase: the first input column landing in it, and where in a phase row.
    columns: Vec<(usize, usize)>,
}

impl PhaseLayout {
    /// The layout for a window sliding over `g`.
    pub(crate) fn new(g: &Geometry) -> PhaseLayout {
        let (oh, ow) = (g.output[0], g.output[1]);
        let [sy, sx] = [g.strides[0], g.strides[1]];
        let [dy, dx] = [g.dilations[0], g.dilations[1]];
        let padded_h =
            ((oh - 1) * sy + (g.kernel[0] - 1) * dy + 1).max(g.input[0] + g.pad_begin[0]);
        let padded_w =
            ((ow - 1) * sx + (g.kernel[1] - 1) * dx + 1).max(g.input[1] + g.pad_begin[1]);
        let (height, width) = (padded_h.div_ceil(sy), padded_w.div_ceil(sx));
        let mut taps = Vec::with_capacity(g.kernel[0] * g.kernel[1]);
        for ky in 0..g.kernel[0] {
            for kx in 0..g.kernel[1] {
                let (y, x) = (ky * dy, kx * dx);
                taps.push(((y % sy) * sx + x % sx, (y / sy) * width + x / sx));
            }
        }
        let reach = taps.iter().map(|&(_, o)| o).max().unwrap_or(0) + oh * width;
        let pl = g.pad_begin[1];
        let columns = (0..sx)
            .map(|px| {
                let first = (px + sx - pl % sx) % sx;
                (first, (first + pl) / sx)
            })
            .collect();
        PhaseLayout {
            input: [g.input[0], g.input[1]],
            pad: [g.pad_begin[0], g.pad_begin[1]],
            strides: [sy, sx],
            width,
            phase_len: reach.max(height * width),
            taps,
            columns,
        }
    }

    /// Where a tap's reads begin in the phases.
    pub(crate) fn start(&self, (phase, offset): (usize, usize)) -> usize {
        phase * self.phase_len + offset
    }

    /// Floats in the phases of one plane.
    pub(crate) fn len(&self) -> usize {
        self.strides[0] * self.strides[1] * self.phase_len
    }

    /// Writes the phases of `plane` (`ih × iw`) into `phases` (`len()` floats), `pad` outside
    /// the input.
    pub(crate) fn split(&self, plane: &[f32], pad: f32, phases: &mut [f32]) {
        let [ih, iw] = self.input;
        let [sy, sx] = self.strides;
        let [pt, pl] = self.pad;
        phases.fill(pad);
        for (iy, row) in plane.chunks(iw).enumerate().take(ih) {
            let y = iy + pt;
            let row_start = (y % sy) * sx * self.phase_len + (y / sy) * self.width;
            if sx == 1 {
                let start = row_start + pl;
                phases[start..start + iw].copy_from_slice(row);
                continue;
            }
            if sx == 2 {
                // Even input columns go to one phase and odd ones to the other, in one pass.
                let even = row_start + (pl % 2) * self.phase_len + pl / 2;
                let odd = row_start + ((pl + 1) % 2) * self.phase_len + pl.div_ceil(2);
                let (head, tail) = phases.split_at_mut(even.max(odd));
                let (low, high) = (&mut head[even.min(odd)..], tail);
                let (evens, odds) = if even < odd { (low, high) } else { (high, low) };
                for ((e, o), pair) in evens
                    .iter_mut()
                    .zip(odds.iter_mut())
                    .zip(row.chunks_exact(2))
                {
                    *e = pair[0];
                    *o = pair[1];
                }
                if iw % 2 == 1 {
                    evens[iw / 2] = row[iw - 1];
                }
                continue;
            }
            for (px, &(first, column)) in self.columns.iter().enumerate() {
                let Some(row) = row.get(first..) else {
                    continue;
                };
                let start = row_start + px * self.phase_len + column;
                let dst = &mut phases[start..start + row.len().div_ceil(sx)];
                dst.iter_mut()
                    .zip(row.iter().step_by(sx))
                    .for_each(|(d, &v)| *d = v);
            }
        }
    }
}

/// `acc = Σ w[tap] · phase[tap]` over every tap, with AVX2+FMA code when the CPU has them.
fn sum_taps(layout: &PhaseLayout, phases: &[f32], weights: &[f32], acc: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            #[target_feature(enable = "avx2,fma")]
            fn wide(layout: &PhaseLayout, phases: &[f32], weights: &[f32], acc: &mut [f32]) {
                sum_taps_body::<true>(layout, phases, weights, acc)
            }
            // SAFETY: the CPU was just checked to have AVX2 and FMA.
            unsafe { wide(layout, phases, weights, acc) };
            return;
        }
    }
    sum_taps_body::<false>(layout, phases, weights, acc)
}

/// Outputs per block of `sum_taps`: eight 8-lane vectors, summed over every tap in registers.
const TAP_BLOCK: usize = 64;

#[inline(always)]
fn sum_taps_body<const FMA: bool>(
    layout: &PhaseLayout,
    phases: &[f32],
    weights: &[f32],
    acc: &mut [f32],
) {
    let full = acc.len() / TAP_BLOCK * TAP_BLOCK;
    let (blocks, rest) = acc.split_at_mut(full);
    for (b, out) in blocks.chunks_exact_mut(TAP_BLOCK).enumerate() {
        let mut sum = [0f32; TAP_BLOCK];
        for (&tap, &w) in layout.taps.iter().zip(weights) {
            let start = layout.start(tap) + b * TAP_BLOCK;
            let lanes: &[f32; TAP_BLOCK] = phases[start..start + TAP_BLOCK]
                .try_into()
                .expect("a block of lanes");
            for (a, &v) in sum.iter_mut().zip(lanes) {
                *a = if FMA { w.mul_add(v, *a) } else { *a + w * v };
            }
        }
        out.copy_from_slice(&sum);
    }
    rest.fill(0.0);
    let left = rest.len();
    for (&tap, &w) in layout.taps.iter().zip(weights) {
        let start = layout.start(tap) + full;
        rest.iter_mut()
            .zip(&phases[start..start + left])
            .for_each(|(a, &v)| *a += w * v);
    }
}

/// The sliding-window geometry of an NCHW convolution of `x` by `w`.
/// The output geometry of a convolution of `x` by `w`.
pub(crate) fn conv_geometry(x: &[usize], w: &[usize], attrs: &ConvAttrs) -> R<Geometry> {
    if x.len() < 3 || w.len() != x.len() {
        return Err(format!(
            "input {x:?} and weight {w:?} must have equal rank ≥ 3"
        ));
    }
    let kernel: Vec<usize> = if attrs.kernel_shape.is_empty() {
        w[2..].to_vec()
    } else {
        attrs.kernel_shape.iter().map(|&k| k as usize).collect()
    };
    geometry(
        &x[2..],
        &kernel,
        attrs.auto_pad,
        &attrs.pads,
        &attrs.strides,
        &attrs.dilations,
        false,
    )
}

/// The output shape of an NCHW convolution of `x` by `w`.
pub(crate) fn output_shape(x: &[usize], w: &[usize], attrs: &ConvAttrs) -> R<Vec<usize>> {
    let g = conv_geometry(x, w, attrs)?;
    let mut shape = vec![x[0], w[0]];
    shape.extend(g.output);
    Ok(shape)
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
    conv_nchw(x, w, b, attrs, None)
}

/// An NCHW `Conv` of arrays, with `epilogue` run on each finished piece of the output.
pub(crate) fn conv_nchw(
    x: &Array,
    w: &Array,
    b: Option<&Array>,
    attrs: &ConvAttrs,
    epilogue: Option<Epilogue>,
) -> R<Array> {
    let bias = b.map(|b| b.data.to_f32s());
    let (out, shape) = conv_f32(
        &x.data.f32s(),
        &x.shape,
        &w.data.f32s(),
        &w.shape,
        bias.as_deref(),
        attrs,
        epilogue,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Values in [-1, 1) from a fixed linear congruence, so cases need no data files.
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Direct N-d convolution in f64, output element by output element: the definition.
    fn direct(
        x: &[f32],
        xs: &[usize],
        w: &[f32],
        ws: &[usize],
        bias: &[f32],
        a: &ConvAttrs,
    ) -> (Vec<f64>, Vec<usize>) {
        let spatial = xs.len() - 2;
        let (n, c, m) = (xs[0], xs[1], ws[0]);
        let group = a.group as usize;
        let (cg, mg) = (c / group, m / group);
        let at = |v: &[i64], d: usize, default: i64| v.get(d).copied().unwrap_or(default) as usize;
        let out: Vec<usize> = (0..spatial)
            .map(|d| {
                let span = xs[2 + d] + at(&a.pads, d, 0) + at(&a.pads, d + spatial, 0);
                let eff = (ws[2 + d] - 1) * at(&a.dilations, d, 1) + 1;
                (span - eff) / at(&a.strides, d, 1) + 1
            })
            .collect();
        let out_len: usize = out.iter().product();
        let kernel_len: usize = ws[2..].iter().product();
        let in_len: usize = xs[2..].iter().product();
        let mut y = vec![0f64; n * m * out_len];
        for b in 0..n {
            for oc in 0..m {
                let gi = oc / mg;
                for o in 0..out_len {
                    let mut acc = f64::from(bias.get(oc).copied().unwrap_or(0.0));
                    for ic in 0..cg {
                        for k in 0..kernel_len {
                            let (mut rest_o, mut rest_k, mut offset) = (o, k, 0usize);
                            let mut inside = true;
                            for d in (0..spatial).rev() {
                                let (od, kd) = (rest_o % out[d], rest_k % ws[2 + d]);
                                rest_o /= out[d];
                                rest_k /= ws[2 + d];
                                let i = (od * at(&a.strides, d, 1) + kd * at(&a.dilations, d, 1))
                                    as i64
                                    - at(&a.pads, d, 0) as i64;
                                if i < 0 || i as usize >= xs[2 + d] {
                                    inside = false;
                                }
                                let below: usize = xs[3 + d..].iter().product();
                                offset += i.max(0) as usize * below;
                            }
                            if inside {
                                let xv = x[(b * c + gi * cg + ic) * in_len + offset];
                                let wv = w[(oc * cg + ic) * kernel_len + k];
                                acc += f64::from(xv) * f64::from(wv);
                            }
                        }
                    }
                    y[(b * m + oc) * out_len + o] = acc;
                }
            }
        }
        let mut shape = vec![n, m];
        shape.extend(out);
        (y, shape)
    }

    fn attrs(group: i64, pads: &[i64], strides: &[i64], dilations: &[i64]) -> ConvAttrs {
        ConvAttrs {
            auto_pad: AutoPad::NotSet,
            dilations: dilations.to_vec(),
            group,
            kernel_shape: Vec::new(),
            pads: pads.to_vec(),
            strides: strides.to_vec(),
            layout: Layout::Nchw,
        }
    }

    /// Checks `conv_f32`, and each way a `Problem` can be computed, against the definition; the
    /// epilogue adds each element's flat index, so a piece reported at the wrong place, or
    /// twice, or not at all, shows.
    fn check(xs: &[usize], ws: &[usize], a: &ConvAttrs) {
        let x = values(xs.iter().product(), 1);
        let w = values(ws.iter().product(), 2);
        let bias = values(ws[0], 3);
        let (want, want_shape) = direct(&x, xs, &w, ws, &bias, a);
        let mark = |pieces: &mut [(usize, &mut [f32])]| -> R<()> {
            for (start, piece) in pieces.iter_mut() {
                for (k, v) in piece.iter_mut().enumerate() {
                    *v += (*start + k) as f32;
                }
            }
            Ok(())
        };
        let compare = |path: &str, got: &[f32]| {
            assert_eq!(got.len(), want.len(), "{path}: {xs:?} * {ws:?}");
            for (i, (&g, &e)) in got.iter().zip(&want).enumerate() {
                let e = e + i as f64;
                assert!(
                    (f64::from(g) - e).abs() <= 1e-4 * (1.0 + e.abs()),
                    "{path}: {xs:?} * {ws:?} {a:?}: element {i}: got {g}, expected {e}"
                );
            }
        };
        let (got, shape) = conv_f32(&x, xs, &w, ws, Some(&bias), a, Some(&mark)).expect("conv");
        assert_eq!(shape, want_shape, "{xs:?} * {ws:?}");
        compare("conv_f32", &got);

        let g = conv_geometry(xs, ws, a).expect("geometry");
        let group = a.group as usize;
        let problem = Problem {
            x: &x,
            w: &w,
            bias: Some(&bias),
            geometry: &g,
            channels: xs[1] / group,
            maps: ws[0] / group,
            images: xs[0] * group,
            group,
        };
        let mut got = vec![0f32; want.len()];
        problem.run(&mut got, Some(&mark)).expect("im2col");
        compare("im2col + GEMM", &got);
        if g.input.len() == 2 {
            let mut got = vec![0f32; want.len()];
            problem.run_direct(&mut got, Some(&mark)).expect("direct");
            compare("direct", &got);
        }
    }

    #[test]
    fn tiled_convolutions_match_the_definition() {
        // Large enough to be split into column tiles and row blocks on several threads.
        check(
            &[2, 8, 30, 30],
            &[24, 8, 3, 3],
            &attrs(1, &[1, 1, 1, 1], &[], &[]),
        );
        check(&[1, 64, 20, 21], &[72, 64, 1, 1], &attrs(1, &[], &[], &[]));
        // Enough maps that the direct path's weights come in several blocks per image.
        check(
            &[1, 64, 12, 13],
            &[70, 64, 3, 3],
            &attrs(1, &[1, 1, 1, 1], &[], &[]),
        );
        check(
            &[2, 3, 33, 31],
            &[16, 3, 3, 3],
            &attrs(1, &[1, 1, 1, 1], &[2, 2], &[]),
        );
        check(
            &[3, 6, 17, 19],
            &[10, 3, 3, 2],
            &attrs(2, &[2, 0, 1, 1], &[2, 1], &[1, 2]),
        );
        check(
            &[1, 4, 9, 7],
            &[5, 4, 2, 3],
            &attrs(1, &[0, 1, 0, 2], &[3, 2], &[]),
        );
        check(&[2, 3, 40], &[7, 3, 5], &attrs(1, &[2, 1], &[2], &[2]));
        check(
            &[1, 4, 6, 7, 5],
            &[6, 2, 3, 2, 3],
            &attrs(2, &[1, 0, 1, 1, 1, 0], &[1, 2, 1], &[]),
        );
    }

    #[test]
    fn depthwise_convolutions_match_the_definition() {
        check(
            &[2, 16, 23, 21],
            &[16, 1, 3, 3],
            &attrs(16, &[1, 1, 1, 1], &[1, 1], &[]),
        );
        check(
            &[1, 12, 20, 20],
            &[12, 1, 3, 3],
            &attrs(12, &[1, 1, 1, 1], &[2, 2], &[]),
        );
        check(
            &[1, 8, 15, 17],
            &[8, 1, 5, 5],
            &attrs(8, &[2, 1, 0, 2], &[2, 3], &[]),
        );
        check(
            &[1, 6, 14, 13],
            &[6, 1, 3, 3],
            &attrs(6, &[2, 2, 2, 2], &[1, 2], &[2, 2]),
        );
        check(&[3, 5, 8, 9], &[5, 1, 2, 4], &attrs(5, &[], &[3, 1], &[]));
    }
}

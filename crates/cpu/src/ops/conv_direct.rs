//! 2-D convolutions computed straight from the zero-padded stride phases of the input, one
//! register tile of output maps × output positions at a time: no unrolled (im2col) copy.
//!
//! In the phase layout every kernel tap of every output row is one contiguous run of input, so
//! a tile's accumulators take one broadcast weight and one vector load per channel and tap. The
//! tile is computed over whole phase rows (`width` columns, the ones past the output unused).

use super::conv::{Epilogue, PhaseLayout, Problem};
use super::elementwise::min_tasks;
use super::linalg::SendPtr;
use super::R;
use rayon::prelude::*;

/// Output maps per register tile.
const MAPS: usize = 6;
/// Output positions per register tile (two 8-lane vectors).
const LANES: usize = 16;
/// Floats of output per task: the tile stays in the core's L2 until it is written out.
const TILE_FLOATS: usize = 16 * 1024;
/// Floats of packed weights per task, read again for every register tile: kept in L2 too.
const WEIGHT_FLOATS: usize = 32 * 1024;

impl Problem<'_> {
    /// Whether the direct path suits this convolution better than im2col + GEMM: 2-D, not
    /// pointwise (those multiply the input as it lies), and few enough input channels that
    /// the unrolled copy would cost more than the product it feeds.
    pub(super) fn direct_suits(&self) -> bool {
        let g = self.geometry;
        let taps: usize = g.kernel.iter().product();
        g.input.len() == 2 && (taps > 1 || g.strides.iter().any(|&s| s > 1)) && self.channels <= 64
    }

    /// Fills `out` (`[images, maps, oh, ow]`) from the input's phases, each task a block of
    /// output rows of one image, with its bias and epilogue applied while the block is in cache.
    pub(super) fn run_direct(&self, out: &mut [f32], epilogue: Option<Epilogue>) -> R<()> {
        let g = self.geometry;
        let (oh, ow) = (g.output[0], g.output[1]);
        if self.images == 0 || self.maps == 0 || oh * ow == 0 {
            return Ok(());
        }
        let layout = PhaseLayout::new(g);
        let width = layout.width;
        let taps = layout.taps.len();
        let depth = self.channels * taps;
        let in_len = g.input[0] * g.input[1];
        let plane_len = layout.len();
        // Slack past the last plane: a tile's reads run up to LANES - 1 positions past its rows.
        let mut phases = vec![0f32; self.images * self.channels * plane_len + LANES];
        phases
            .par_chunks_mut(plane_len)
            .with_min_len(min_tasks(plane_len))
            .zip(self.x.par_chunks(in_len))
            .for_each(|(dst, src)| layout.split(src, 0.0, dst));

        // Weights per group and block of MAPS maps as `[channel·tap][MAPS]`, zero past the last map.
        let blocks = self.maps.div_ceil(MAPS);
        let mut packed = vec![0f32; self.group * blocks * depth * MAPS];
        for (index, block) in packed.chunks_mut(depth * MAPS).enumerate() {
            let (gi, b) = (index / blocks, index % blocks);
            for j in 0..MAPS.min(self.maps - b * MAPS) {
                let map = gi * self.maps + b * MAPS + j;
                for (i, &v) in self.w[map * depth..(map + 1) * depth].iter().enumerate() {
                    block[i * MAPS + j] = v;
                }
            }
        }

        let wanted = Self::wanted_tasks(self.images * self.maps * oh * width * depth);
        // Tiles of whole rows and blocks of maps that stay in the core's L2 with their weights,
        // split further (rows first) until there are enough tasks for the threads.
        let mut group_blocks = blocks
            .min((TILE_FLOATS / (MAPS * width)).max(1))
            .min((WEIGHT_FLOATS / (MAPS * depth)).max(1));
        let mut rows = (TILE_FLOATS / (group_blocks * MAPS * width)).clamp(1, oh);
        let tasks_of = |rows: usize, group_blocks: usize| {
            self.images * oh.div_ceil(rows) * blocks.div_ceil(group_blocks)
        };
        while tasks_of(rows, group_blocks) < wanted && (rows > 1 || group_blocks > 1) {
            if rows > 1 {
                rows = rows.div_ceil(2);
            } else {
                group_blocks = group_blocks.div_ceil(2);
            }
        }
        let (row_blocks, map_groups) = (oh.div_ceil(rows), blocks.div_ceil(group_blocks));
        let out_len = oh * ow;
        let base = SendPtr(out.as_mut_ptr());
        let task = |t: usize, (starts, tile): &mut (Vec<usize>, Vec<f32>)| -> R<()> {
            let image = t / (row_blocks * map_groups);
            let (rb, mgi) = ((t / map_groups) % row_blocks, t % map_groups);
            let (y0, y1) = (rb * rows, ((rb + 1) * rows).min(oh));
            let (b0, b1) = (mgi * group_blocks, ((mgi + 1) * group_blocks).min(blocks));
            let gi = image % self.group;
            starts.clear();
            for c in 0..self.channels {
                let plane = (image * self.channels + c) * plane_len;
                starts.extend(layout.taps.iter().map(|&tap| plane + layout.start(tap)));
            }
            let span = (y1 - y0) * width;
            let stride = span.next_multiple_of(LANES);
            // Every element is written by `register_tiles`: no need to clear what is reused.
            tile.resize((b1 - b0) * MAPS * stride, 0.0);
            let weights =
                &packed[(gi * blocks + b0) * depth * MAPS..(gi * blocks + b1) * depth * MAPS];
            register_tiles(&phases[y0 * width..], starts, weights, depth, stride, tile);

            let first_map = b0 * MAPS;
            let last_map = (b1 * MAPS).min(self.maps);
            let mut pieces = Vec::with_capacity(last_map - first_map);
            for (r, rows_of_map) in (first_map..last_map).zip(tile.chunks(stride)) {
                let start = (image * self.maps + r) * out_len + y0 * ow;
                // SAFETY: tasks cover disjoint (image, maps, rows) blocks of `out`; this map's
                // rows y0..y1 are inside its plane.
                let piece =
                    unsafe { std::slice::from_raw_parts_mut(base.at(start), (y1 - y0) * ow) };
                let bias = self.bias.map_or(0.0, |b| b[gi * self.maps + r]);
                for (dst, src) in piece.chunks_mut(ow).zip(rows_of_map.chunks(width)) {
                    dst.iter_mut().zip(src).for_each(|(d, &s)| *d = s + bias);
                }
                pieces.push((start, piece));
            }
            epilogue.map_or(Ok(()), |epilogue| epilogue(&mut pieces))
        };
        Self::run_tasks(self.images * row_blocks * map_groups, task)
    }
}

/// `tile[map][q] = Σᵢ weights[i][map] · phases[starts[i] + q]` for every map of `weights`
/// (blocks of `depth × MAPS`) and every `q < stride`, with AVX2+FMA code when the CPU has it.
fn register_tiles(
    phases: &[f32],
    starts: &[usize],
    weights: &[f32],
    depth: usize,
    stride: usize,
    tile: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            #[target_feature(enable = "avx2,fma")]
            fn wide(p: &[f32], s: &[usize], w: &[f32], d: usize, st: usize, t: &mut [f32]) {
                register_tiles_body::<true>(p, s, w, d, st, t)
            }
            // SAFETY: the CPU was just checked to have AVX2 and FMA.
            unsafe { wide(phases, starts, weights, depth, stride, tile) };
            return;
        }
    }
    register_tiles_body::<false>(phases, starts, weights, depth, stride, tile)
}

#[inline(always)]
fn register_tiles_body<const FMA: bool>(
    phases: &[f32],
    starts: &[usize],
    weights: &[f32],
    depth: usize,
    stride: usize,
    tile: &mut [f32],
) {
    for q in (0..stride).step_by(LANES) {
        let lanes = &phases[q..];
        for (block, maps) in weights
            .chunks_exact(depth * MAPS)
            .zip(tile.chunks_mut(MAPS * stride))
        {
            let mut acc = [[0f32; LANES]; MAPS];
            for (&s, w) in starts.iter().zip(block.chunks_exact(MAPS)) {
                let v: &[f32; LANES] = lanes[s..s + LANES].try_into().expect("LANES values");
                let w: &[f32; MAPS] = w.try_into().expect("MAPS weights");
                for (a, &wj) in acc.iter_mut().zip(w) {
                    for (a, &v) in a.iter_mut().zip(v) {
                        *a = if FMA { wj.mul_add(v, *a) } else { *a + wj * v };
                    }
                }
            }
            for (a, dst) in acc.iter().zip(maps.chunks_mut(stride)) {
                dst[q..q + LANES].copy_from_slice(a);
            }
        }
    }
}

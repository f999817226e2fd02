//! The tensor-core tile pipeline shared by GEMM and implicit-GEMM convolution: `mma.sync` on
//! BF16, FP16 or TF32 operands with FP32 accumulation, fragments read with `ldmatrix` from a
//! swizzled shared-memory layout, filled by a multi-stage `cp.async` pipeline.
//!
//! A block of eight warps (2 along M, 4 along N; four warps of 64×64 for large 16-bit
//! products, see [`Tile::choose`]) computes a `block_m`×128 output tile. Each
//! shared-memory tile row holds one output row's (A) or column's (B) 64-byte k-slice: 32
//! BF16/FP16 or 16 TF32 elements, four 16-byte chunks. Chunk `c` of row `r` is stored at chunk
//! `c ^ ((r >> 1) & 3)`, so the eight row addresses of every `ldmatrix` hit distinct banks.
//!
//! Operands whose k-slices are contiguous and 16-byte aligned in memory are copied with
//! `cp.async` (zero-filled past the edges), and so is a 16-bit B stored `[K, N]` (k-major),
//! kept k-major in shared memory and read with `ldmatrix.trans`; any other operand
//! (transposed, fused prologue, gathered conv patches, other dtypes) goes through registers
//! with the A/B layout. `step` k-slices are multiplied between two barriers, each k-step's
//! fragments loaded before the previous step's products issue (with
//! [`Tile::carry_fragments`], across the barrier too).
//! Reference: the SIMT core in `gemm.rs` and the CPU executor's MatMul.

use crate::cg::{Cg, Gen, Val};
use crate::gemm::Storer;
use crate::operand::{Class, Staged};
use crate::plan::Precision;
use crate::target::Sm;
use inkwell::types::BasicTypeEnum;
use inkwell::values::{BasicValueEnum, IntValue, PointerValue};
use inkwell::{AddressSpace, IntPredicate};
use sparkc_ir::DType;

/// Bytes of one shared-memory tile row (a k-slice).
const ROW_BYTES: i64 = 64;
/// Bytes of one `cp.async` copy and one `ldmatrix` row.
const CHUNK: i64 = 16;
/// Block tile columns.
const BLOCK_N: i64 = 128;
/// Warps along M.
const WARPS_M: i64 = 2;
/// Blocks `ptxas` is asked to fit on one multiprocessor (which caps registers a thread): one
/// block's barrier waits hide behind the other's work.
const BLOCKS_PER_SM: u32 = 2;

/// The element type the tensor cores multiply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// BF16 × BF16, `m16n8k16`.
    Bf16,
    /// FP16 × FP16, `m16n8k16`.
    F16,
    /// FP32 operands read as TF32, `m16n8k8`.
    Tf32,
    /// 8-bit integer codes, `m16n8k32`, accumulated in i32.
    Int8 {
        /// A's codes are I8 (else U8).
        a_signed: bool,
        /// B's codes are I8 (else U8).
        b_signed: bool,
    },
    /// FP8 codes (E4M3FN or E5M2), `m16n8k32`, accumulated in FP32: the sm_89 form on Hopper
    /// and datacenter Blackwell, `kind::f8f6f4` on the sm_120 family (`blackwell`).
    Fp8 {
        /// A's format.
        a: DType,
        /// B's format.
        b: DType,
        /// The sm_120 family's `kind::f8f6f4` instruction.
        blackwell: bool,
    },
    /// FP4 E2M1 codes with their block scales, `kind::mxf4nvf4.block_scale` `m16n8k64` (the
    /// sm_120 family): E4M3 scales per 16 (`scale_vec::4X`, NVFP4, `nv`) or E8M0 scales per 32
    /// (`scale_vec::2X`, MXFP4).
    Fp4 {
        /// NVFP4 rather than MXFP4.
        nv: bool,
    },
}

impl Kind {
    /// The tensor-core type for operands of classes `a` and `b` on `sm`, or `None` for CUDA
    /// cores. Codes are multiplied as codes where the tensor cores take them (INT8 everywhere,
    /// FP8 from sm_89 on; an operand with a zero point has it subtracted in the epilogue, so
    /// at most one may have one); otherwise every operand is staged as its unscaled values in
    /// the narrowest type that holds them exactly, and FP32 values in TF32 unless `precision`
    /// asks for exact FP32.
    pub fn choose(
        sm: Sm,
        precision: Precision,
        a: (Class, bool),
        b: (Class, bool),
    ) -> Option<Kind> {
        let ((a, a_zero), (b, b_zero)) = (a, b);
        match (a, b) {
            (Class::Int8 { signed: sa }, Class::Int8 { signed: sb }) if !(a_zero && b_zero) => {
                return Some(Kind::Int8 {
                    a_signed: sa,
                    b_signed: sb,
                })
            }
            (Class::Fp8(da), Class::Fp8(db)) if !a_zero && !b_zero && sm.has_fp8_mma() => {
                return Some(Kind::Fp8 {
                    a: da,
                    b: db,
                    blackwell: sm.is_sm120_family(),
                })
            }
            (
                Class::Fp4 { nv, block },
                Class::Fp4 {
                    nv: nv_b,
                    block: block_b,
                },
            ) if nv == nv_b
                && block == block_b
                && block == if nv { 16 } else { 32 }
                && sm.is_sm120_family() =>
            {
                return Some(Kind::Fp4 { nv })
            }
            _ => {}
        }
        for (kind, staged) in [
            (Kind::Bf16, Staged::Bf16),
            (Kind::F16, Staged::F16),
            (Kind::Tf32, Staged::Tf32),
        ] {
            if a.exact_in(staged) && b.exact_in(staged) {
                return Some(kind);
            }
        }
        let tf32 = |c: Class| c != Class::Wide;
        (precision == Precision::Tf32 && tf32(a) && tf32(b)).then_some(Kind::Tf32)
    }

    /// The dtype operands are staged in (codes as bytes, FP4 codes two to a byte).
    pub fn dtype(self) -> DType {
        match self {
            Kind::Bf16 => DType::BF16,
            Kind::F16 => DType::F16,
            Kind::Tf32 => DType::F32,
            Kind::Int8 { .. } | Kind::Fp8 { .. } | Kind::Fp4 { .. } => DType::U8,
        }
    }

    /// True when a B stored k-major (a plain `[K, N]` matrix) can be copied as it is and read
    /// with `ldmatrix.trans`: the 16-bit kinds.
    pub fn reads_k_major(self) -> bool {
        matches!(self, Kind::Bf16 | Kind::F16)
    }

    /// True when the tensor cores multiply 8-bit codes rather than values.
    pub fn codes(self) -> bool {
        matches!(self, Kind::Int8 { .. } | Kind::Fp8 { .. })
    }

    /// True when the tensor cores multiply FP4 codes and apply their block scales.
    pub fn blocks(self) -> bool {
        matches!(self, Kind::Fp4 { .. })
    }

    /// Bits of one staged element.
    pub fn bits(self) -> i64 {
        match self {
            Kind::Bf16 | Kind::F16 => 16,
            Kind::Tf32 => 32,
            Kind::Int8 { .. } | Kind::Fp8 { .. } => 8,
            Kind::Fp4 { .. } => 4,
        }
    }

    /// Elements of one 16-byte chunk.
    pub fn chunk_elems(self) -> i64 {
        CHUNK * 8 / self.bits()
    }

    /// Elements of one staged k-slice.
    pub fn block_k(self) -> i64 {
        ROW_BYTES * 8 / self.bits()
    }

    /// Bytes of block scales per staged tile row (FP4: one byte per block of the k-slice,
    /// room for NVFP4's eight).
    fn scale_row_bytes(self) -> i64 {
        if self.blocks() {
            8
        } else {
            0
        }
    }

    fn name(self) -> String {
        let int = |s: bool| if s { "s8" } else { "u8" };
        let fp8 = |d: DType| if d == DType::F8E5M2 { "e5m2" } else { "e4m3" };
        match self {
            Kind::Bf16 => "bf16".into(),
            Kind::F16 => "f16".into(),
            Kind::Tf32 => "tf32".into(),
            Kind::Int8 { a_signed, b_signed } => format!("{}x{}", int(a_signed), int(b_signed)),
            Kind::Fp8 { a, b, blackwell } => {
                let form = if blackwell { "f8f6f4." } else { "" };
                format!("{form}{}x{}", fp8(a), fp8(b))
            }
            Kind::Fp4 { nv: true } => "mxf4nvf4.e2m1xe2m1.ue4m3".into(),
            Kind::Fp4 { nv: false } => "mxf4nvf4.e2m1xe2m1.ue8m0".into(),
        }
    }

    /// The `llvm.nvvm.mma.*` intrinsic.
    fn intrinsic(self) -> String {
        let int = |s: bool| if s { "s8" } else { "u8" };
        let fp8 = |d: DType| if d == DType::F8E5M2 { "e5m2" } else { "e4m3" };
        match self {
            Kind::Bf16 => "llvm.nvvm.mma.m16n8k16.row.col.bf16".into(),
            Kind::F16 => "llvm.nvvm.mma.m16n8k16.row.col.f32.f32".into(),
            Kind::Tf32 => "llvm.nvvm.mma.m16n8k8.row.col.tf32".into(),
            Kind::Int8 { a_signed, b_signed } if a_signed == b_signed => {
                format!("llvm.nvvm.mma.m16n8k32.row.col.{}", int(a_signed))
            }
            Kind::Int8 { a_signed, b_signed } => format!(
                "llvm.nvvm.mma.m16n8k32.row.col.{}.{}",
                int(a_signed),
                int(b_signed)
            ),
            Kind::Fp8 { a, b, blackwell } => {
                let form = if blackwell { "kind.f8f6f4." } else { "" };
                format!(
                    "llvm.nvvm.mma.m16n8k32.row.col.{form}f32.{}.{}.f32",
                    fp8(a),
                    fp8(b)
                )
            }
            Kind::Fp4 { nv: true } => "llvm.nvvm.mma.block.scale.m16n8k64.row.col.mxf4nvf4.scale.4x.f32.e2m1.e2m1.f32.ue4m3".into(),
            Kind::Fp4 { nv: false } => "llvm.nvvm.mma.block.scale.m16n8k64.row.col.mxf4nvf4.scale.2x.f32.e2m1.e2m1.f32.ue8m0".into(),
        }
    }

    /// True when the accumulators are i32.
    fn integer(self) -> bool {
        matches!(self, Kind::Int8 { .. })
    }
}

/// The block tile, warp layout and pipeline depth of one kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    /// Block tile rows: 128, or 64 when M is small.
    pub block_m: i64,
    /// Warps along N: four, or two (warp tiles of 64x64) for large 16-bit products.
    pub warps_n: i64,
    /// k-slices in flight.
    pub stages: i64,
    /// k-slices multiplied between two barriers (a divisor of `stages`).
    pub step: i64,
}

impl Tile {
    /// The tile for a product with `rows` output rows (when known) on `sm`: the target
    /// table's depth, and 64-row tiles when 128-row ones would leave most SMs idle.
    /// `copied` says both operands are copied as stored (by `cp.async`, no gathering or
    /// conversion in registers, which needs registers that four-warp tiles lack).
    pub fn choose(
        sm: Sm,
        kind: Kind,
        copied: bool,
        rows: Option<i64>,
        columns: Option<i64>,
        units: Option<i64>,
    ) -> Tile {
        let info = sm.info();
        let blocks = |bm: i64| match (rows, columns, units) {
            (Some(m), Some(n), Some(u)) => {
                Some(u * ((m + bm - 1) / bm) * ((n + BLOCK_N - 1) / BLOCK_N))
            }
            _ => None,
        };
        let small = rows.is_some_and(|m| m <= 64)
            || blocks(128).is_some_and(|b| b < i64::from(info.sm_count));
        // 16-bit products copied as stored: four warps of 64x64 (fewer `ldmatrix` per `mma`
        // than eight of 64x32), one k-slice per barrier; measured on an H200
        // (docs/codegen.md, Targets).
        let wide_warps = !small && copied && matches!(kind, Kind::Bf16 | Kind::F16);
        Tile {
            block_m: if small { 64 } else { 128 },
            warps_n: if wide_warps { 2 } else { 4 },
            stages: i64::from(info.mma_stages),
            step: if wide_warps {
                1
            } else {
                i64::from(info.mma_step())
            },
        }
    }

    /// Block tile columns.
    pub fn block_n(self) -> i64 {
        BLOCK_N
    }

    /// Threads per block.
    pub fn threads(self) -> u32 {
        (WARPS_M * self.warps_n * 32) as u32
    }

    /// Output rows of one warp's tile.
    fn warp_m(self) -> i64 {
        self.block_m / WARPS_M
    }

    /// Output columns of one warp's tile.
    fn warp_n(self) -> i64 {
        BLOCK_N / self.warps_n
    }

    /// True when each iteration's first fragments are loaded before the previous one's last
    /// products: the four-warp layout, whose 255 registers a thread hold a second set of
    /// fragments across the barrier.
    pub fn carry_fragments(self) -> bool {
        self.warps_n == 2
    }

    /// Dynamic shared memory of the pipeline for `kind`, in bytes.
    pub fn shared_bytes(self, kind: Kind) -> u32 {
        (self.stages * (self.block_m + BLOCK_N) * (ROW_BYTES + kind.scale_row_bytes())) as u32
    }

    /// The variant name `--dump kernels` shows.
    pub fn describe(self, kind: Kind) -> String {
        let per_barrier = if self.step > 1 {
            format!(", {} per barrier", self.step)
        } else {
            String::new()
        };
        format!(
            "mma.{} {}x{}x{} {}-stage{per_barrier}, {} warps of {}x{}",
            kind.name(),
            self.block_m,
            BLOCK_N,
            kind.block_k(),
            self.stages,
            WARPS_M * self.warps_n,
            self.warp_m(),
            self.warp_n(),
        )
    }
}

/// The element offset of a work unit's matrix in an operand's buffer.
pub type UnitOffset<'a, 'ctx> = dyn Fn(&Cg<'ctx>, IntValue<'ctx>) -> Gen<IntValue<'ctx>> + 'a;

/// The element offset of chunk `(row, k)` of a work unit's gathered operand, and whether it
/// lies inside the tensor (outside it reads as zeros): arguments `(unit, row, k)`.
pub type Gather<'a, 'ctx> = dyn Fn(
        &Cg<'ctx>,
        IntValue<'ctx>,
        IntValue<'ctx>,
        IntValue<'ctx>,
    ) -> Gen<(IntValue<'ctx>, IntValue<'ctx>)>
    + 'a;

/// Where the rows of a direct operand lie.
pub enum Rows<'a, 'ctx> {
    /// A matrix per work unit, its rows `row_stride` elements apart.
    Strided {
        /// Elements between consecutive rows.
        row_stride: IntValue<'ctx>,
        /// Element offset of a work unit's matrix.
        unit_offset: &'a UnitOffset<'a, 'ctx>,
    },
    /// Each chunk at its own offset (a channels-last image patch: a chunk is consecutive
    /// channels of one pixel).
    Gathered(&'a Gather<'a, 'ctx>),
    /// B stored k-major, as a plain `[K, N]` matrix per work unit: its k rows `row_stride`
    /// elements apart, consecutive output columns adjacent, N a multiple of a chunk's
    /// elements. Kinds that [`Kind::reads_k_major`] only.
    KMajor {
        /// Elements between consecutive k rows.
        row_stride: IntValue<'ctx>,
        /// Element offset of a work unit's matrix.
        unit_offset: &'a UnitOffset<'a, 'ctx>,
    },
}

/// An operand's buffer read straight into shared memory with `cp.async`: each 16-byte chunk of
/// its rows (A's output rows, B's output columns) holds consecutive k of the staged dtype,
/// 16-byte aligned.
pub struct Direct<'a, 'ctx> {
    /// The buffer.
    pub base: PointerValue<'ctx>,
    /// Where the rows lie.
    pub rows: Rows<'a, 'ctx>,
}

/// Loads element `(row, k)` of A or `(k, col)` of B for one work unit as the kind stages it: a
/// code (`Val::I`) for the kinds that multiply codes, a value (`Val::F`) otherwise. Elements out
/// of range must load as zero (a code operand with a zero point: as the zero point).
pub type Element<'a, 'ctx> =
    dyn Fn(&mut Cg<'ctx>, IntValue<'ctx>, IntValue<'ctx>, IntValue<'ctx>) -> Gen<Val<'ctx>> + 'a;

/// Loads 32 consecutive FP4 elements along k of one tile row (A's output row, B's output
/// column) of a work unit, starting at k: their codes and the scale codes of the blocks they
/// make up. Rows and k out of range load as code 0.
pub type Fp4Chunk<'a, 'ctx> = dyn Fn(
        &mut Cg<'ctx>,
        IntValue<'ctx>,
        IntValue<'ctx>,
        IntValue<'ctx>,
    ) -> Gen<(Vec<IntValue<'ctx>>, Vec<IntValue<'ctx>>)>
    + 'a;

/// How one operand reaches shared memory.
pub struct Operand<'a, 'ctx> {
    /// Loads one element (the register path).
    pub load: &'a Element<'a, 'ctx>,
    /// Loads FP4 codes and block scales, for the block-scaled kinds.
    pub fp4: Option<&'a Fp4Chunk<'a, 'ctx>>,
    /// The `cp.async` path, when the operand's layout allows it.
    pub direct: Option<Direct<'a, 'ctx>>,
    /// Whether consecutive k are adjacent in memory (neighbouring threads then walk k).
    pub k_contiguous: bool,
}

impl<'a, 'ctx> Operand<'a, 'ctx> {
    /// The buffer, k-row stride and unit offset of an operand copied k-major.
    pub fn k_major(
        &self,
    ) -> Option<(PointerValue<'ctx>, IntValue<'ctx>, &'a UnitOffset<'a, 'ctx>)> {
        match &self.direct {
            Some(Direct {
                base,
                rows:
                    Rows::KMajor {
                        row_stride,
                        unit_offset,
                    },
            }) => Some((*base, *row_stride, *unit_offset)),
            _ => None,
        }
    }
}

/// The zero point of one operand's codes, subtracted in the epilogue through the sums of the
/// other operand's codes over k (computed by the tensor cores against a matrix of ones).
pub struct Correction<'ctx> {
    /// The operand with the zero point.
    pub side: Side,
    /// The zero point, as a signed `i64`.
    pub zero: IntValue<'ctx>,
}

/// Which operand a staged tile holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The left operand (rows of the output).
    A,
    /// The right operand (columns of the output).
    B,
}

struct Pipeline<'a, 'ctx> {
    kind: Kind,
    tile: Tile,
    smem: PointerValue<'ctx>,
    m: IntValue<'ctx>,
    n: IntValue<'ctx>,
    k: IntValue<'ctx>,
    a: &'a Operand<'a, 'ctx>,
    b: &'a Operand<'a, 'ctx>,
    tid: IntValue<'ctx>,
}

impl<'ctx> Pipeline<'_, 'ctx> {
    fn stage_bytes(&self) -> i64 {
        (self.tile.block_m + BLOCK_N) * (ROW_BYTES + self.kind.scale_row_bytes())
    }

    /// Byte offset, within a stage, of A's (`Side::A`) or B's block scales.
    fn scales_at(&self, side: Side) -> i64 {
        let tiles = (self.tile.block_m + BLOCK_N) * ROW_BYTES;
        match side {
            Side::A => tiles,
            Side::B => tiles + self.tile.block_m * self.kind.scale_row_bytes(),
        }
    }

    /// Address of byte `offset` of the dynamic shared memory.
    fn byte(&self, cg: &Cg<'ctx>, offset: IntValue<'ctx>) -> Gen<PointerValue<'ctx>> {
        // SAFETY: offsets stay within the stages the launch sized.
        Ok(unsafe {
            cg.b.build_in_bounds_gep(cg.cx.i8_type(), self.smem, &[offset], "")?
        })
    }

    /// The shared address of chunk `kc` of tile row `row` in the tile at byte offset `base`.
    fn slot(
        &self,
        cg: &Cg<'ctx>,
        base: IntValue<'ctx>,
        row: IntValue<'ctx>,
        kc: IntValue<'ctx>,
    ) -> Gen<PointerValue<'ctx>> {
        let swizzle = cg.b.build_and(
            cg.b.build_right_shift(row, cg.c(1), false, "")?,
            cg.c(3),
            "",
        )?;
        let chunk = cg.b.build_xor(kc, swizzle, "")?;
        let at = cg.add(
            base,
            cg.add(cg.mul(row, cg.c(ROW_BYTES))?, cg.mul(chunk, cg.c(CHUNK))?)?,
        )?;
        self.byte(cg, at)
    }

    /// The shared address of chunk `nc` (columns `8·nc..8·nc + 8`) of k row `krow` in a
    /// k-major B tile at byte offset `base`. Chunk `nc` of row `krow` is stored at chunk
    /// `nc ^ (krow & 7)`, so the eight k rows of every `ldmatrix.trans` hit distinct banks.
    fn k_major_slot(
        &self,
        cg: &Cg<'ctx>,
        base: IntValue<'ctx>,
        krow: IntValue<'ctx>,
        nc: IntValue<'ctx>,
    ) -> Gen<PointerValue<'ctx>> {
        let chunk = cg.b.build_xor(nc, cg.b.build_and(krow, cg.c(7), "")?, "")?;
        self.k_major_stored(cg, base, krow, chunk)
    }

    /// The shared address of stored chunk `chunk` of k row `krow` in a k-major B tile.
    fn k_major_stored(
        &self,
        cg: &Cg<'ctx>,
        base: IntValue<'ctx>,
        krow: IntValue<'ctx>,
        chunk: IntValue<'ctx>,
    ) -> Gen<PointerValue<'ctx>> {
        let at = cg.add(
            base,
            cg.add(
                cg.mul(krow, cg.c(BLOCK_N * self.kind.bits() / 8))?,
                cg.mul(chunk, cg.c(CHUNK))?,
            )?,
        )?;
        self.byte(cg, at)
    }

    /// Issues the copies of k-slice `k0..k0 + block_k` of a k-major B into the tile at byte
    /// offset `base`.
    fn load_k_major(
        &self,
        cg: &Cg<'ctx>,
        (unit, n0): (IntValue<'ctx>, IntValue<'ctx>),
        (buffer, row_stride, unit_offset): (
            PointerValue<'ctx>,
            IntValue<'ctx>,
            &UnitOffset<'_, 'ctx>,
        ),
        base: IntValue<'ctx>,
        k0: IntValue<'ctx>,
    ) -> Gen<()> {
        let chunks_per_row = BLOCK_N / self.kind.chunk_elems();
        for i in 0..self.kind.block_k() * chunks_per_row / i64::from(self.tile.threads()) {
            let c = cg.add(self.tid, cg.c(i * i64::from(self.tile.threads())))?;
            let (krow, nc) = (
                cg.div(c, cg.c(chunks_per_row))?,
                cg.rem(c, cg.c(chunks_per_row))?,
            );
            let dst = self.k_major_slot(cg, base, krow, nc)?;
            let gk = cg.add(k0, krow)?;
            let gn = cg.add(n0, cg.mul(nc, cg.c(self.kind.chunk_elems()))?)?;
            let ok = cg.and(
                cg.icmp(IntPredicate::SLT, gk, self.k)?,
                cg.icmp(IntPredicate::SLT, gn, self.n)?,
            )?;
            let at = cg.add(unit_offset(cg, unit)?, cg.add(cg.mul(gk, row_stride)?, gn)?)?;
            self.issue_copy(cg, buffer, dst, ok, at)?;
        }
        Ok(())
    }

    /// Issues the copies of k-slice `kt` of both operands into stage `stage`.
    fn load_stage(
        &self,
        cg: &mut Cg<'ctx>,
        unit: IntValue<'ctx>,
        origin: (IntValue<'ctx>, IntValue<'ctx>),
        stage: IntValue<'ctx>,
        kt: IntValue<'ctx>,
    ) -> Gen<()> {
        let stage_base = cg.mul(stage, cg.c(self.stage_bytes()))?;
        let k0 = cg.mul(kt, cg.c(self.kind.block_k()))?;
        for side in [Side::A, Side::B] {
            if let (Side::B, Some(layout)) = (side, self.b.k_major()) {
                let base = cg.add(stage_base, cg.c(self.tile.block_m * ROW_BYTES))?;
                self.load_k_major(cg, (unit, origin.1), layout, base, k0)?;
                continue;
            }
            let (op, rows, row0, tile_rows, base) = match side {
                Side::A => (self.a, self.m, origin.0, self.tile.block_m, stage_base),
                Side::B => (
                    self.b,
                    self.n,
                    origin.1,
                    BLOCK_N,
                    cg.add(stage_base, cg.c(self.tile.block_m * ROW_BYTES))?,
                ),
            };
            let chunks_per_row = ROW_BYTES / CHUNK;
            for i in 0..tile_rows * chunks_per_row / i64::from(self.tile.threads()) {
                let c = cg.add(self.tid, cg.c(i * i64::from(self.tile.threads())))?;
                let (row, kc) = if op.k_contiguous {
                    (
                        cg.div(c, cg.c(chunks_per_row))?,
                        cg.rem(c, cg.c(chunks_per_row))?,
                    )
                } else {
                    (cg.rem(c, cg.c(tile_rows))?, cg.div(c, cg.c(tile_rows))?)
                };
                let dst = self.slot(cg, base, row, kc)?;
                let grow = cg.add(row0, row)?;
                let gk = cg.add(k0, cg.mul(kc, cg.c(self.kind.chunk_elems()))?)?;
                if self.kind.blocks() {
                    let scales = cg.add(stage_base, cg.c(self.scales_at(side)))?;
                    self.copy_fp4(cg, op, (unit, grow, gk), dst, (scales, row, kc))?;
                    continue;
                }
                match &op.direct {
                    Some(d) => self.copy_async(cg, d, unit, dst, (grow, rows), gk)?,
                    None => self.copy_through_registers(cg, op, side, unit, dst, grow, gk)?,
                }
            }
        }
        Ok(())
    }

    /// One chunk of 32 FP4 codes (by `cp.async` when the operand allows it, else packed two to
    /// a byte in registers) and the scale codes of its blocks, stored after the stage's tiles.
    fn copy_fp4(
        &self,
        cg: &mut Cg<'ctx>,
        op: &Operand<'_, 'ctx>,
        (unit, row, k): (IntValue<'ctx>, IntValue<'ctx>, IntValue<'ctx>),
        dst: PointerValue<'ctx>,
        (scales, tile_row, kc): (IntValue<'ctx>, IntValue<'ctx>, IntValue<'ctx>),
    ) -> Gen<()> {
        let chunk = op.fp4.ok_or_else(|| {
            crate::KernelError::Unsupported("an FP4 operand without its chunk loader".into())
        })?;
        let (codes, scale_codes) = chunk(cg, unit, row, k)?;
        let i8t = cg.cx.i8_type();
        let rows = if std::ptr::eq(op, self.a) {
            self.m
        } else {
            self.n
        };
        match &op.direct {
            Some(d) => self.copy_async(cg, d, unit, dst, (row, rows), k)?,
            None => {
                let mut v = i8t.vec_type(CHUNK as u32).get_undef();
                for (e, pair) in codes.chunks(2).enumerate() {
                    let high = cg.b.build_left_shift(pair[1], cg.c(4), "")?;
                    let byte = cg.b.build_or(pair[0], high, "")?;
                    let byte = cg.b.build_int_truncate(byte, i8t, "")?;
                    let at = cg.cx.i32_type().const_int(e as u64, false);
                    v = cg.b.build_insert_element(v, byte, at, "")?;
                }
                cg.store_aligned(dst, v, CHUNK as u32)?;
            }
        }
        let per_chunk = scale_codes.len() as i64;
        for (j, code) in scale_codes.iter().enumerate() {
            let slot = cg.add(cg.mul(kc, cg.c(per_chunk))?, cg.c(j as i64))?;
            let at = cg.add(
                scales,
                cg.add(cg.mul(tile_row, cg.c(self.kind.scale_row_bytes()))?, slot)?,
            )?;
            let byte = cg.b.build_int_truncate(*code, i8t, "")?;
            cg.b.build_store(self.byte(cg, at)?, byte)?;
        }
        Ok(())
    }

    /// One 16-byte `cp.async`, zero-filled when the chunk lies outside the matrix.
    fn copy_async(
        &self,
        cg: &Cg<'ctx>,
        d: &Direct<'_, 'ctx>,
        unit: IntValue<'ctx>,
        dst: PointerValue<'ctx>,
        (row, rows): (IntValue<'ctx>, IntValue<'ctx>),
        k: IntValue<'ctx>,
    ) -> Gen<()> {
        let ok = cg.and(
            cg.icmp(IntPredicate::SLT, row, rows)?,
            cg.icmp(IntPredicate::SLT, k, self.k)?,
        )?;
        let (ok, at) = match &d.rows {
            Rows::Strided {
                row_stride,
                unit_offset,
            } => (
                ok,
                cg.add(
                    unit_offset(cg, unit)?,
                    cg.add(cg.mul(row, *row_stride)?, k)?,
                )?,
            ),
            Rows::Gathered(gather) => {
                let (inside, at) = gather(cg, unit, row, k)?;
                (cg.and(ok, inside)?, at)
            }
            Rows::KMajor { .. } => {
                return Err(crate::KernelError::Unsupported(
                    "a k-major operand other than a 16-bit B".into(),
                ))
            }
        };
        self.issue_copy(cg, d.base, dst, ok, at)
    }

    /// One 16-byte `cp.async` of the chunk at element offset `at` of `base` into `dst`, or
    /// sixteen zero bytes where `ok` is false.
    fn issue_copy(
        &self,
        cg: &Cg<'ctx>,
        base: PointerValue<'ctx>,
        dst: PointerValue<'ctx>,
        ok: IntValue<'ctx>,
        at: IntValue<'ctx>,
    ) -> Gen<()> {
        // A copy of zero bytes reads nothing, so its address may lie outside the buffer. Left
        // unclamped, addresses advance by a constant each k-slice, with no arithmetic per
        // copy; that was measured faster with `carry_fragments` and slower without it.
        let unclamped = self.tile.carry_fragments();
        let at = if unclamped {
            at
        } else {
            cg.select(ok, at, cg.c(0))?.into_int_value()
        };
        // Element offset to byte offset (FP4 codes are two to a byte).
        let at = if self.kind.bits() < 8 {
            cg.div(cg.mul(at, cg.c(self.kind.bits()))?, cg.c(8))?
        } else {
            at
        };
        let src = if unclamped {
            let ty = cg.storage_type(self.kind.dtype())?;
            // SAFETY: `cp.async` reads the address only where `ok` holds, and there it lies
            // inside the buffer.
            unsafe { cg.b.build_gep(ty, base, &[at], "")? }
        } else {
            cg.gep(self.kind.dtype(), base, at)?
        };
        let global =
            cg.b.build_address_space_cast(src, cg.cx.ptr_type(AddressSpace::from(1u16)), "")?;
        let bytes = cg.select(ok, cg.c(CHUNK), cg.c(0))?.into_int_value();
        let bytes = cg.b.build_int_truncate(bytes, cg.cx.i32_type(), "")?;
        cg.call_void(
            "llvm.nvvm.cp.async.cg.shared.global.16.s",
            &[dst.into(), global.into(), bytes.into()],
        )
    }

    /// One chunk loaded element by element, converted, and stored as one 16-byte vector.
    #[allow(clippy::too_many_arguments)]
    fn copy_through_registers(
        &self,
        cg: &mut Cg<'ctx>,
        op: &Operand<'_, 'ctx>,
        side: Side,
        unit: IntValue<'ctx>,
        dst: PointerValue<'ctx>,
        row: IntValue<'ctx>,
        k: IntValue<'ctx>,
    ) -> Gen<()> {
        let elems = self.kind.chunk_elems();
        let vec_ty = match cg.storage_type(self.kind.dtype())? {
            BasicTypeEnum::FloatType(f) => f.vec_type(elems as u32).into(),
            BasicTypeEnum::IntType(i) => i.vec_type(elems as u32).into(),
            _ => unreachable!("tensor-core operands are numbers"),
        };
        let mut v: inkwell::values::VectorValue = match vec_ty {
            BasicTypeEnum::VectorType(t) => t.get_undef(),
            _ => unreachable!("a vector type"),
        };
        for e in 0..elems {
            let kk = cg.add(k, cg.c(e))?;
            let x = match side {
                Side::A => (op.load)(cg, unit, row, kk)?,
                Side::B => (op.load)(cg, unit, kk, row)?,
            };
            let x = if self.kind.codes() {
                match x {
                    Val::I(code) => cg.b.build_int_truncate(code, cg.cx.i8_type(), "")?.into(),
                    Val::F(_) => {
                        return Err(crate::KernelError::Unsupported(
                            "a code operand loaded a value".into(),
                        ))
                    }
                }
            } else {
                cg.narrow(self.kind.dtype(), Val::F(x.float(cg)?))?
            };
            v =
                cg.b.build_insert_element(v, x, cg.cx.i32_type().const_int(e as u64, false), "")?;
        }
        cg.store_aligned(dst, v, CHUNK as u32)
    }

    /// The scale register of tile row `row` (A's row, B's column) for k-step `ks` of a staged
    /// FP4 slice: NVFP4's four E4M3 scales of the step's 64 elements, or MXFP4's two E8M0
    /// scales in the low two bytes.
    fn scale_register(
        &self,
        cg: &Cg<'ctx>,
        stage: IntValue<'ctx>,
        side: Side,
        row: IntValue<'ctx>,
        ks: i64,
    ) -> Gen<BasicValueEnum<'ctx>> {
        let nv = matches!(self.kind, Kind::Fp4 { nv: true });
        let per_step = if nv { 4 } else { 2 };
        let at = cg.add(
            cg.add(
                cg.mul(stage, cg.c(self.stage_bytes()))?,
                cg.c(self.scales_at(side)),
            )?,
            cg.add(
                cg.mul(row, cg.c(self.kind.scale_row_bytes()))?,
                cg.c(ks * per_step),
            )?,
        )?;
        let ptr = self.byte(cg, at)?;
        let i32t = cg.cx.i32_type();
        let value = if nv {
            cg.b.build_load(i32t, ptr, "")?
        } else {
            let half = cg.b.build_load(cg.cx.i16_type(), ptr, "")?;
            cg.b.build_int_z_extend(half.into_int_value(), i32t, "")?
                .into()
        };
        Ok(value)
    }

    /// `ldmatrix.x4` at this lane's row and chunk of a staged tile.
    fn ldmatrix(
        &self,
        cg: &Cg<'ctx>,
        base: IntValue<'ctx>,
        row: IntValue<'ctx>,
        kc: IntValue<'ctx>,
    ) -> Gen<[BasicValueEnum<'ctx>; 4]> {
        let ptr = self.slot(cg, base, row, kc)?;
        load_matrices(cg, ptr, false)
    }

    /// The B fragments of k-step `ks` for the warp's columns `16·nj..16·nj + 16`, from a
    /// k-major tile by `ldmatrix.x4.trans`: lane group `q` addresses k rows `8·(q & 1)..+8`
    /// of columns `8·(q >> 1)..+8` of those, so matrices 0 and 1 make the first 8 columns'
    /// fragment and 2 and 3 the next.
    fn ldmatrix_k_major(
        &self,
        cg: &Cg<'ctx>,
        base: IntValue<'ctx>,
        warp_n: IntValue<'ctx>,
        (q_lo, q_hi, r): (IntValue<'ctx>, IntValue<'ctx>, IntValue<'ctx>),
        (ks, nj): (i64, i64),
    ) -> Gen<[BasicValueEnum<'ctx>; 4]> {
        let krow = cg.add(cg.c(ks * 16), cg.add(cg.mul(q_lo, cg.c(8))?, r)?)?;
        // The warp's first chunk, q_hi and nj's two chunks occupy disjoint bits of the chunk
        // index, and the swizzle (krow & 7 = r) only the low three: swizzling the lane's
        // chunk once leaves one xor per fragment.
        let lane_chunk = cg.add(cg.mul(warp_n, cg.c(self.tile.warp_n() / 8))?, q_hi)?;
        let lane_chunk = cg.b.build_xor(lane_chunk, r, "")?;
        let chunk = cg.b.build_xor(lane_chunk, cg.c(nj * 2), "")?;
        let ptr = self.k_major_stored(cg, base, krow, chunk)?;
        load_matrices(cg, ptr, true)
    }

    /// One `mma.sync`: `c += a × b` on a 16×8 accumulator fragment (with the block scales'
    /// registers of A and B for the block-scaled kinds).
    fn mma(
        &self,
        cg: &Cg<'ctx>,
        a: &[BasicValueEnum<'ctx>; 4],
        b: [BasicValueEnum<'ctx>; 2],
        c: &[BasicValueEnum<'ctx>],
        scales: Option<(BasicValueEnum<'ctx>, BasicValueEnum<'ctx>)>,
    ) -> Gen<Vec<BasicValueEnum<'ctx>>> {
        let acc: BasicTypeEnum = if self.kind.integer() {
            cg.cx.i32_type().into()
        } else {
            cg.f32t().into()
        };
        let ret = cg.cx.struct_type(&[acc, acc, acc, acc], false);
        let operand = |v: BasicValueEnum<'ctx>| -> Gen<BasicValueEnum<'ctx>> {
            Ok(match self.kind {
                Kind::F16 => cg.b.build_bit_cast(v, cg.cx.f16_type().vec_type(2), "")?,
                _ => v,
            })
        };
        let mut args = Vec::with_capacity(10);
        for v in a.iter().chain(b.iter()) {
            args.push(operand(*v)?);
        }
        args.extend_from_slice(c);
        if let Some((sa, sb)) = scales {
            // Byte and thread selectors 0: the whole register, from the first lanes of each
            // quad (rows g and g + 8 for A, column g for B).
            let zero: BasicValueEnum = cg.cx.i16_type().const_zero().into();
            args.extend_from_slice(&[sa, zero, zero, sb, zero, zero]);
        }
        let r = cg
            .call(&self.kind.intrinsic(), ret.into(), &args)?
            .into_struct_value();
        (0..4)
            .map(|i| Ok(cg.b.build_extract_value(r, i, "")?))
            .collect()
    }

    /// The fragments of k-step `ks` (k16 for 16-bit types, k8 for TF32, k32 for codes, two
    /// chunks) of the slice staged in `stage`, for this lane of warp `warp`.
    fn fragments(
        &self,
        cg: &Cg<'ctx>,
        stage: IntValue<'ctx>,
        ks: i64,
        warp: (IntValue<'ctx>, IntValue<'ctx>),
        lane: IntValue<'ctx>,
    ) -> Gen<Fragments<'ctx>> {
        let a_base = cg.mul(stage, cg.c(self.stage_bytes()))?;
        let b_base = cg.add(a_base, cg.c(self.tile.block_m * ROW_BYTES))?;
        let (q, r) = (cg.div(lane, cg.c(8))?, cg.rem(lane, cg.c(8))?);
        let (q_lo, q_hi) = (cg.rem(q, cg.c(2))?, cg.div(q, cg.c(2))?);
        let warp_m = self.tile.warp_m();
        let tiles_m = warp_m / 16;
        let a_row0 = cg.add(
            cg.mul(warp.0, cg.c(warp_m))?,
            cg.add(cg.mul(q_lo, cg.c(8))?, r)?,
        )?;
        let b_row0 = cg.add(
            cg.mul(warp.1, cg.c(self.tile.warp_n()))?,
            cg.add(cg.mul(q_hi, cg.c(8))?, r)?,
        )?;
        let a_kc = cg.add(cg.c(2 * ks), q_hi)?;
        let b_kc = cg.add(cg.c(2 * ks), q_lo)?;
        let mut a = Vec::with_capacity(tiles_m as usize);
        for mi in 0..tiles_m {
            let row = cg.add(a_row0, cg.c(mi * 16))?;
            a.push(self.ldmatrix(cg, a_base, row, a_kc)?);
        }
        let mut b = Vec::with_capacity(4);
        for nj in 0..self.tile.warp_n() / 16 {
            let x = if self.b.k_major().is_some() {
                self.ldmatrix_k_major(cg, b_base, warp.1, (q_lo, q_hi, r), (ks, nj))?
            } else {
                let row = cg.add(b_row0, cg.c(nj * 16))?;
                self.ldmatrix(cg, b_base, row, b_kc)?
            };
            b.push([x[0], x[1]]);
            b.push([x[2], x[3]]);
        }
        let (mut a_scales, mut b_scales) = (Vec::new(), Vec::new());
        if self.kind.blocks() {
            let quad = cg.rem(lane, cg.c(4))?;
            let g = cg.div(lane, cg.c(4))?;
            for mi in 0..tiles_m {
                // Lane 4g + 0 gives row g's scales, lane 4g + 1 row g + 8's.
                let half = cg.mul(cg.rem(quad, cg.c(2))?, cg.c(8))?;
                let row = cg.add(
                    cg.mul(warp.0, cg.c(warp_m))?,
                    cg.add(cg.c(mi * 16), cg.add(half, g)?)?,
                )?;
                a_scales.push(self.scale_register(cg, stage, Side::A, row, ks)?);
            }
            for ni in 0..(self.tile.warp_n() / 8) {
                let col = cg.add(
                    cg.mul(warp.1, cg.c(self.tile.warp_n()))?,
                    cg.add(cg.c(ni * 8), g)?,
                )?;
                b_scales.push(self.scale_register(cg, stage, Side::B, col, ks)?);
            }
        }
        Ok(Fragments {
            a,
            b,
            a_scales,
            b_scales,
        })
    }

    /// Multiplies one k-step's fragments into the accumulators, and, for a zero point's
    /// correction, the other operand's codes into their sums over k (`sums`: four per 16×8
    /// fragment of B's columns or A's rows).
    fn multiply(
        &self,
        cg: &Cg<'ctx>,
        f: &Fragments<'ctx>,
        (mut acc, mut sums): (Vec<BasicValueEnum<'ctx>>, Vec<BasicValueEnum<'ctx>>),
        correct: Option<Side>,
    ) -> Gen<(Vec<BasicValueEnum<'ctx>>, Vec<BasicValueEnum<'ctx>>)> {
        // Four bytes of ones: the other side of the sums' products.
        let ones: BasicValueEnum = cg.cx.i32_type().const_int(0x0101_0101, false).into();
        let scales_of = |mi: usize, ni: usize| {
            (!f.a_scales.is_empty()).then(|| (f.a_scales[mi], f.b_scales[ni]))
        };
        for (mi, a) in f.a.iter().enumerate() {
            for (ni, b) in f.b.iter().enumerate() {
                let at = (mi * f.b.len() + ni) * 4;
                let out = self.mma(cg, a, *b, &acc[at..at + 4], scales_of(mi, ni))?;
                acc.splice(at..at + 4, out);
            }
        }
        match correct {
            Some(Side::A) => {
                for (ni, b) in f.b.iter().enumerate() {
                    let out = self.mma(cg, &[ones; 4], *b, &sums[ni * 4..ni * 4 + 4], None)?;
                    sums.splice(ni * 4..ni * 4 + 4, out);
                }
            }
            Some(Side::B) => {
                for (mi, a) in f.a.iter().enumerate() {
                    let out = self.mma(cg, a, [ones; 2], &sums[mi * 4..mi * 4 + 4], None)?;
                    sums.splice(mi * 4..mi * 4 + 4, out);
                }
            }
            None => {}
        }
        Ok((acc, sums))
    }
}

/// One warp's operand fragments for one k-step: A's per 16 rows, B's per 8 columns, and the
/// block scales' registers of the block-scaled kinds.
struct Fragments<'ctx> {
    a: Vec<[BasicValueEnum<'ctx>; 4]>,
    b: Vec<[BasicValueEnum<'ctx>; 2]>,
    a_scales: Vec<BasicValueEnum<'ctx>>,
    b_scales: Vec<BasicValueEnum<'ctx>>,
}

impl<'ctx> Fragments<'ctx> {
    /// The registers in one list, as a loop carries them.
    fn flatten(&self) -> Vec<BasicValueEnum<'ctx>> {
        let a = self.a.iter().flatten();
        let b = self.b.iter().flatten();
        a.chain(b)
            .chain(&self.a_scales)
            .chain(&self.b_scales)
            .copied()
            .collect()
    }

    /// Fragments laid out like `like` from the registers [`Fragments::flatten`] listed.
    fn unflatten(values: &[BasicValueEnum<'ctx>], like: &Fragments<'ctx>) -> Fragments<'ctx> {
        let (a, rest) = values.split_at(like.a.len() * 4);
        let (b, rest) = rest.split_at(like.b.len() * 2);
        let (a_scales, b_scales) = rest.split_at(like.a_scales.len());
        Fragments {
            a: a.chunks(4).map(|c| [c[0], c[1], c[2], c[3]]).collect(),
            b: b.chunks(2).map(|c| [c[0], c[1]]).collect(),
            a_scales: a_scales.to_vec(),
            b_scales: b_scales.to_vec(),
        }
    }
}

/// Four 8×8 matrices of 16-bit elements by `ldmatrix.x4` (`.trans` when `trans`) from this
/// lane's row address `ptr`.
fn load_matrices<'ctx>(
    cg: &Cg<'ctx>,
    ptr: PointerValue<'ctx>,
    trans: bool,
) -> Gen<[BasicValueEnum<'ctx>; 4]> {
    let i32t = cg.cx.i32_type();
    let ret = cg
        .cx
        .struct_type(&[i32t.into(), i32t.into(), i32t.into(), i32t.into()], false);
    let name = if trans {
        "llvm.nvvm.ldmatrix.sync.aligned.m8n8.x4.trans.b16.p3"
    } else {
        "llvm.nvvm.ldmatrix.sync.aligned.m8n8.x4.b16.p3"
    };
    let r = cg
        .call(name, ret.into(), &[ptr.into()])?
        .into_struct_value();
    let mut out = [i32t.const_zero().into(); 4];
    for (i, o) in out.iter_mut().enumerate() {
        *o = cg.b.build_extract_value(r, i as u32, "")?;
    }
    Ok(out)
}

/// The tensor-core tiled product: for each of `units` independent `m×k` by `k×n` products,
/// accumulates (in FP32, or i32 for integer codes, less the `correction` of a zero point) and
/// hands each in-range output to `store` as `f32`. GPU targets only.
#[allow(clippy::too_many_arguments)]
pub fn tiled<'ctx>(
    cg: &mut Cg<'ctx>,
    kind: Kind,
    tile: Tile,
    units: IntValue<'ctx>,
    (m, n, k): (IntValue<'ctx>, IntValue<'ctx>, IntValue<'ctx>),
    a: &Operand<'_, 'ctx>,
    b: &Operand<'_, 'ctx>,
    correction: Option<Correction<'ctx>>,
    store: &Storer<'_, 'ctx>,
) -> Gen<()> {
    if correction.is_some() && !kind.integer() {
        return Err(crate::KernelError::Unsupported(
            "a zero point needs integer tensor cores".into(),
        ));
    }
    if a.k_major().is_some() || (b.k_major().is_some() && !kind.reads_k_major()) {
        return Err(crate::KernelError::Unsupported(format!(
            "a k-major operand other than B, or for {} tensor cores",
            kind.name()
        )));
    }
    cg.min_blocks_per_sm(BLOCKS_PER_SM);
    cg.max_threads_per_block(tile.threads());
    let smem = cg.dynamic_shared()?;
    let tid = cg.tid()?;
    let p = Pipeline {
        kind,
        tile,
        smem,
        m,
        n,
        k,
        a,
        b,
        tid,
    };
    let warp_id = cg.div(tid, cg.c(32))?;
    let lane = cg.rem(tid, cg.c(32))?;
    let warp = (
        cg.div(warp_id, cg.c(tile.warps_n))?,
        cg.rem(warp_id, cg.c(tile.warps_n))?,
    );
    let block_m = tile.block_m;
    let tiles_m = cg.div(cg.add(m, cg.c(block_m - 1))?, cg.c(block_m))?;
    let tiles_n = cg.div(cg.add(n, cg.c(BLOCK_N - 1))?, cg.c(BLOCK_N))?;
    let per_unit = cg.mul(tiles_m, tiles_n)?;
    let work = cg.mul(units, per_unit)?;
    let block_k = kind.block_k();
    let k_tiles = cg.div(cg.add(k, cg.c(block_k - 1))?, cg.c(block_k))?;
    let stages = tile.stages;
    let per_row = (tile.warp_n() / 8) as usize;
    let per_column = (tile.warp_m() / 16) as usize;
    let frags = per_column * per_row * 4;
    let side = correction.as_ref().map(|c| c.side);
    let sums = match side {
        Some(Side::A) => per_row * 4,
        Some(Side::B) => per_column * 4,
        None => 0,
    };
    let zero: BasicValueEnum = if kind.integer() {
        cg.cx.i32_type().const_zero().into()
    } else {
        cg.f(0.0).into()
    };
    cg.for_each_block_unit(work, |cg, w| {
        let unit = cg.div(w, per_unit)?;
        let t = cg.rem(w, per_unit)?;
        let m0 = cg.mul(cg.div(t, tiles_n)?, cg.c(block_m))?;
        let n0 = cg.mul(cg.rem(t, tiles_n)?, cg.c(BLOCK_N))?;
        // Each commit group holds `step` k-slices; `groups - 1` groups are in flight while one
        // is multiplied. Slices past k are zero-filled, so a last partial step adds zeros.
        let step = tile.step;
        let groups = stages / step;
        let pending = cg.cx.i32_type().const_int((groups - 2) as u64, false);
        let wait_for_slice = |cg: &mut Cg<'ctx>| -> Gen<()> {
            cg.call_void("llvm.nvvm.cp.async.wait.group", &[pending.into()])?;
            cg.barrier()
        };
        for s in 0..(groups - 1) * step {
            p.load_stage(cg, unit, (m0, n0), cg.c(s), cg.c(s))?;
            if s % step == step - 1 {
                cg.call_void("llvm.nvvm.cp.async.commit.group", &[])?;
            }
        }
        // With `carry_fragments`, each iteration's first k-step fragments are loaded by the
        // one before, after its barrier and before its last products issue, so the tensor
        // cores stay busy across the barrier.
        let mut init = vec![zero; frags + sums];
        let first = if tile.carry_fragments() {
            wait_for_slice(cg)?;
            let first = p.fragments(cg, cg.c(0), 0, warp, lane)?;
            init.extend(first.flatten());
            Some(first)
        } else {
            None
        };
        let state = cg.fold_range(cg.c(0), k_tiles, cg.c(step), init, |cg, kt, mut state| {
            let carried = state.split_off(frags + sums);
            let mut sums = state.split_off(frags);
            let mut acc = state;
            if first.is_none() {
                wait_for_slice(cg)?;
            }
            for s in 0..step {
                let next = cg.add(kt, cg.c((groups - 1) * step + s))?;
                p.load_stage(cg, unit, (m0, n0), cg.rem(next, cg.c(stages))?, next)?;
            }
            cg.call_void("llvm.nvvm.cp.async.commit.group", &[])?;
            // Each k-step's fragments are loaded before the previous step's products issue,
            // so shared-memory latency hides behind tensor-core work.
            let mut steps = Vec::with_capacity(step as usize * 2);
            for s in 0..step {
                let stage = cg.rem(cg.add(kt, cg.c(s))?, cg.c(stages))?;
                steps.extend([(stage, 0), (stage, 1)]);
            }
            let mut current = match &first {
                Some(like) => Fragments::unflatten(&carried, like),
                None => p.fragments(cg, steps[0].0, steps[0].1, warp, lane)?,
            };
            for &(stage, ks) in &steps[1..] {
                let next = p.fragments(cg, stage, ks, warp, lane)?;
                (acc, sums) = p.multiply(cg, &current, (acc, sums), side)?;
                current = next;
            }
            let following = match first {
                Some(_) => {
                    wait_for_slice(cg)?;
                    let stage = cg.rem(cg.add(kt, cg.c(step))?, cg.c(stages))?;
                    Some(p.fragments(cg, stage, 0, warp, lane)?)
                }
                None => None,
            };
            (acc, sums) = p.multiply(cg, &current, (acc, sums), side)?;
            acc.extend(sums);
            acc.extend(following.iter().flat_map(Fragments::flatten));
            Ok(acc)
        })?;
        // Empty the pipeline before the next unit's first copies reuse the stages.
        let none = cg.cx.i32_type().const_zero();
        cg.call_void("llvm.nvvm.cp.async.wait.group", &[none.into()])?;
        cg.barrier()?;
        let g = cg.div(lane, cg.c(4))?;
        let t2 = cg.mul(cg.rem(lane, cg.c(4))?, cg.c(2))?;
        let row0 = cg.add(m0, cg.add(cg.mul(warp.0, cg.c(tile.warp_m()))?, g)?)?;
        let col0 = cg.add(n0, cg.add(cg.mul(warp.1, cg.c(tile.warp_n()))?, t2)?)?;
        for (i, v) in state[..frags].iter().enumerate() {
            let (frag, e) = (i / 4, i % 4);
            let (mi, ni) = (frag / per_row, frag % per_row);
            let row = cg.add(row0, cg.c(mi as i64 * 16 + (e as i64 / 2) * 8))?;
            let col = cg.add(col0, cg.c(ni as i64 * 8 + e as i64 % 2))?;
            let ok = cg.and(
                cg.icmp(IntPredicate::SLT, row, m)?,
                cg.icmp(IntPredicate::SLT, col, n)?,
            )?;
            let v = if kind.integer() {
                let mut v = cg.b.build_int_s_extend(v.into_int_value(), cg.i64t(), "")?;
                if let Some(c) = &correction {
                    // Column sums of B sit in c0/c1 of every row; row sums of A in c0 and c2.
                    let sum = match c.side {
                        Side::A => state[frags + ni * 4 + e % 2],
                        Side::B => state[frags + mi * 4 + (e / 2) * 2],
                    };
                    let sum =
                        cg.b.build_int_s_extend(sum.into_int_value(), cg.i64t(), "")?;
                    v = cg.sub(v, cg.mul(c.zero, sum)?)?;
                }
                cg.itof(v)?
            } else {
                v.into_float_value()
            };
            cg.if_then(ok, |cg| store(cg, unit, row, col, v))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [Kind; 4] = [
        Kind::Bf16,
        Kind::F16,
        Kind::Tf32,
        Kind::Int8 {
            a_signed: true,
            b_signed: true,
        },
    ];

    /// Every tile the table gives splits its copies evenly over the block's threads, its
    /// warps' tiles into whole fragments, and fits the target's shared memory.
    #[test]
    fn every_tile_is_consistent() {
        for sm in Sm::ALL {
            for kind in KINDS {
                for copied in [false, true] {
                    for rows in [Some(16), Some(4096), None] {
                        let tile = Tile::choose(sm, kind, copied, rows, Some(4096), Some(1));
                        let threads = i64::from(tile.threads());
                        let what = format!("{sm} {kind:?} copied={copied} rows={rows:?}: {tile:?}");
                        for tile_rows in [tile.block_m, BLOCK_N] {
                            assert_eq!(tile_rows * (ROW_BYTES / CHUNK) % threads, 0, "{what}");
                        }
                        let k_major_chunks = kind.block_k() * BLOCK_N / kind.chunk_elems();
                        assert_eq!(k_major_chunks % threads, 0, "{what}");
                        assert_eq!(tile.warp_m() % 16, 0, "{what}");
                        assert_eq!(tile.warp_n() % 16, 0, "{what}");
                        assert_eq!(tile.stages % tile.step, 0, "{what}");
                        assert!(tile.stages / tile.step >= 2, "{what}");
                        let shared = tile.shared_bytes(kind) * BLOCKS_PER_SM;
                        assert!(shared <= sm.info().max_shared_per_block, "{what}");
                    }
                }
            }
        }
    }

    /// Large 16-bit products with both operands copied get 64x64 warp tiles; others (a
    /// convolution, an operand through registers), small products and other kinds keep
    /// eight warps of 64x32 or 32x32.
    #[test]
    fn warp_tiles_follow_the_kind_and_the_product() {
        let tile =
            |kind, copied, rows| Tile::choose(Sm::Sm90a, kind, copied, rows, Some(4096), Some(1));
        let wide = tile(Kind::Bf16, true, Some(4096));
        assert_eq!((wide.warp_m(), wide.warp_n()), (64, 64));
        assert!(wide.carry_fragments());
        for narrow in [
            tile(Kind::Bf16, false, Some(4096)),
            tile(Kind::Tf32, true, Some(4096)),
        ] {
            assert_eq!(
                (narrow.warp_m(), narrow.warp_n(), narrow.threads()),
                (64, 32, 256)
            );
            assert!(!narrow.carry_fragments());
        }
        let small = tile(Kind::Bf16, true, Some(64));
        assert_eq!(
            (small.block_m, small.warp_m(), small.warp_n()),
            (64, 32, 32)
        );
    }
}

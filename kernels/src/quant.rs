//! Quantization kernels: `QuantizeLinear` and `DequantizeLinear` per tensor, per axis or per
//! block, for every stored format: FP8 (E4M3FN, E5M2 and the FNUZ forms), FP4 E2M1 and the
//! 4-bit integers packed two to a byte, 8-, 16- and 32-bit integers; and `RoundToBlocks`, the
//! NVFP4/MXFP4 rounding of activations (its block math is shared with the FP4 products).
//!
//! Narrow floats decode through a table of their values built from `sparkc_ir::formats` and
//! encode in registers with the same rounding (to nearest, ties to even) and saturation; so a
//! dequantize-to-BF16/FP32 kernel runs on every target, the FP4 path included. Reference: the
//! CPU executor's `QuantizeLinear` and `DequantizeLinear`.

use crate::cg::{Cg, Combine, Gen, Val};
use crate::movement::{coords, linear};
use crate::narrow::{
    encode_minifloat, is_minifloat, is_packed, load_packed_code, store_packed, value_table,
};
use crate::target::{Sm, Target};
use crate::{resolve_axis, Family, Generated, KernelError, Launch, Request, TensorSig};
use inkwell::context::Context;
use inkwell::values::{FloatValue, IntValue, PointerValue};
use inkwell::{FloatPredicate, IntPredicate};
use sparkc_ir::formats::{int_range, BlockFormat};
use sparkc_ir::{DType, Dim, Op};

const BLOCK: u32 = 256;

/// True for the ops this family generates.
pub fn handles(op: &Op) -> bool {
    matches!(
        op,
        Op::QuantizeLinear { .. }
            | Op::DequantizeLinear { .. }
            | Op::RoundToBlocks { .. }
            | Op::DynamicQuantizeLinear
    )
}

/// The code → value tables of one block-scaled format: E2M1 and its block scale type.
pub(crate) struct BlockTables<'ctx> {
    format: BlockFormat,
    e2m1: PointerValue<'ctx>,
    scales: PointerValue<'ctx>,
}

/// One block's scale: its code, and the factor its codes are multiplied by (with and without
/// NVFP4's tensor scale).
pub(crate) struct BlockScale<'ctx> {
    /// The E4M3 or E8M0 code.
    pub(crate) code: IntValue<'ctx>,
    /// The scale the block's values are divided by (tensor scale included).
    pub(crate) full: FloatValue<'ctx>,
    /// The scale its codes stand for, without the tensor scale.
    pub(crate) own: FloatValue<'ctx>,
}

impl<'ctx> BlockTables<'ctx> {
    /// The tables for `format`.
    pub(crate) fn new(cg: &mut Cg<'ctx>, format: BlockFormat) -> BlockTables<'ctx> {
        BlockTables {
            format,
            e2m1: value_table(cg, DType::F4E2M1),
            scales: value_table(cg, format.scale_dtype()),
        }
    }

    /// The value of E2M1 code `code`.
    pub(crate) fn e2m1(&self, cg: &Cg<'ctx>, code: IntValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        Ok(cg
            .load_raw(cg.f32t().into(), self.e2m1, code)?
            .into_float_value())
    }

    /// The scale of a block whose largest magnitude is `amax` (`sparkc_ir`'s block codec:
    /// NVFP4 rounds `amax / 6 / tensor_scale` to E4M3, MXFP4 takes `2^(⌊log2 amax⌋ − 2)`).
    pub(crate) fn scale(
        &self,
        cg: &Cg<'ctx>,
        amax: FloatValue<'ctx>,
        tensor_scale: FloatValue<'ctx>,
    ) -> Gen<BlockScale<'ctx>> {
        let code = match self.format {
            BlockFormat::Nvfp4 => {
                let wanted = cg.fdiv(cg.fdiv(amax, cg.f(6.0))?, tensor_scale)?;
                encode_minifloat(cg, DType::F8E4M3FN, wanted, true)?
            }
            BlockFormat::Mxfp4 => {
                // amax's binade from its exponent field; zero and subnormals give the
                // smallest scale, infinities and NaN the largest.
                let bits =
                    cg.b.build_bit_cast(amax, cg.cx.i32_type(), "")?
                        .into_int_value();
                let bits = cg.b.build_int_z_extend(bits, cg.i64t(), "")?;
                let field = cg.b.build_and(
                    cg.b.build_right_shift(bits, cg.c(23), false, "")?,
                    cg.c(0xFF),
                    "",
                )?;
                let code = cg.imax(cg.sub(field, cg.c(2))?, cg.c(0))?;
                let top = cg.icmp(IntPredicate::EQ, field, cg.c(0xFF))?;
                cg.select(top, cg.c(254), code)?.into_int_value()
            }
        };
        let own = cg
            .load_raw(cg.f32t().into(), self.scales, code)?
            .into_float_value();
        let full = match self.format {
            BlockFormat::Nvfp4 => cg.fmul(own, tensor_scale)?,
            BlockFormat::Mxfp4 => own,
        };
        Ok(BlockScale { code, full, own })
    }

    /// The E2M1 code of `x` in a block of scale `scale` (0 when the scale is 0).
    pub(crate) fn code(
        &self,
        cg: &Cg<'ctx>,
        x: FloatValue<'ctx>,
        scale: &BlockScale<'ctx>,
    ) -> Gen<IntValue<'ctx>> {
        let q = encode_saturated(cg, DType::F4E2M1, cg.fdiv(x, scale.full)?)?;
        let positive = cg.fcmp(FloatPredicate::OGT, scale.full, cg.f(0.0))?;
        Ok(cg.select(positive, q, cg.c(0))?.into_int_value())
    }
}

/// Generates `RoundToBlocks`: one block of the last axis per thread iteration.
fn generate_round<'ctx>(
    cx: &'ctx Context,
    req: &Request,
    format: BlockFormat,
) -> Gen<Generated<'ctx>> {
    let mut cg = req.begin(cx, BLOCK);
    let x = req.input(0)?.clone();
    let len = x
        .shape
        .last()
        .cloned()
        .ok_or_else(|| KernelError::Unsupported("rounds blocks of a scalar".into()))?;
    let tables = BlockTables::new(&mut cg, format);
    let block = format.block_size() as i64;
    let n = cg.product(&x.shape)?;
    let len_v = cg.dim(&len)?;
    let per_row = cg.div(cg.add(len_v, cg.c(block - 1))?, cg.c(block))?;
    let rows = cg.div(n, len_v)?;
    let blocks = cg.mul(rows, per_row)?;
    let scale_at = req
        .inputs
        .get(1)
        .cloned()
        .flatten()
        .map(|t| (t, req.input_param(1)));
    let f32t = cg.f32t();
    cg.for_each_thread_item(cg.c(0), blocks, |cg, b| {
        let (row, j) = (cg.div(b, per_row)?, cg.rem(b, per_row)?);
        let start = cg.add(cg.mul(row, len_v)?, cg.mul(j, cg.c(block))?)?;
        let count = cg.imin(cg.sub(len_v, cg.mul(j, cg.c(block))?)?, cg.c(block))?;
        let mut amax = cg.f(0.0);
        for e in 0..block {
            let inside = cg.icmp(IntPredicate::SLT, cg.c(e), count)?;
            let at = cg.add(start, cg.imin(cg.c(e), cg.sub(count, cg.c(1))?)?)?;
            let v = cg.load_raw(f32t.into(), cg.buffer(req.input_param(0)), at)?;
            let magnitude = cg.fcall1("llvm.fabs.f32", v.into_float_value())?;
            let magnitude = cg.fsel(inside, magnitude, cg.f(0.0))?;
            amax = cg.fcall2("llvm.maxnum.f32", amax, magnitude)?;
        }
        let g = match &scale_at {
            Some((t, param)) => cg.load(t.dtype, cg.buffer(*param), cg.c(0))?.float(cg)?,
            None => cg.f(1.0),
        };
        let scale = tables.scale(cg, amax, g)?;
        cg.for_range(cg.c(0), count, cg.c(1), |cg, e| {
            let at = cg.add(start, e)?;
            let v = cg
                .load_raw(f32t.into(), cg.buffer(req.input_param(0)), at)?
                .into_float_value();
            let code = tables.code(cg, v, &scale)?;
            let y = cg.fmul(tables.e2m1(cg, code)?, scale.full)?;
            cg.store(DType::F32, cg.buffer(0), at, Val::F(y))
        })
    })?;
    let launch = Launch {
        grid: x.numel().ceil_div(&Dim::known(block * i64::from(BLOCK))),
        block: BLOCK,
        shared_bytes: 0,
        dynamic_shared_bytes: 0,
    };
    let info = req.describe(
        Family::Quantization,
        format!("round-to-blocks {}", format.name()),
        vec![req.op.name()],
        launch,
    );
    Ok(Generated {
        info,
        module: cg.finish()?,
    })
}

/// The integer range of a quantized integer type.
fn int_limits(dtype: DType) -> Option<(i64, i64)> {
    (dtype.is_integer() && dtype.bits() <= 32).then(|| int_range(dtype))
}

/// Reads element `index` of a buffer of quantized `dtype`: its code, or its value as a float.
pub(crate) struct Codes<'ctx> {
    dtype: DType,
    base: PointerValue<'ctx>,
    table: Option<PointerValue<'ctx>>,
}

impl<'ctx> Codes<'ctx> {
    /// A reader of the buffer parameter `param`.
    pub(crate) fn new(cg: &mut Cg<'ctx>, dtype: DType, param: usize) -> Codes<'ctx> {
        let base = cg.buffer(param);
        let table = is_minifloat(dtype).then(|| value_table(cg, dtype));
        Codes { dtype, base, table }
    }

    /// The stored type.
    pub(crate) fn dtype(&self) -> DType {
        self.dtype
    }

    /// The raw code of element `index` of a byte-coded or packed buffer, as i64 in 0..256.
    pub(crate) fn code(&self, cg: &Cg<'ctx>, index: IntValue<'ctx>) -> Gen<IntValue<'ctx>> {
        if is_packed(self.dtype) {
            load_packed_code(cg, self.dtype, self.base, index)
        } else {
            let byte = cg.load_raw(cg.cx.i8_type().into(), self.base, index)?;
            Ok(cg
                .b
                .build_int_z_extend(byte.into_int_value(), cg.i64t(), "")?)
        }
    }

    /// The value of element `index`, as `f32`.
    pub(crate) fn read(&self, cg: &Cg<'ctx>, index: IntValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        if let Some(table) = self.table {
            let code = self.code(cg, index)?;
            return Ok(cg
                .load_raw(cg.f32t().into(), table, code)?
                .into_float_value());
        }
        cg.load(self.dtype, self.base, index)?.float(cg)
    }
}

/// Where each element's scale (and zero point) sits: one for all, one per index of an axis,
/// or one per block along an axis.
pub(crate) struct ScaleIndex {
    shape: Vec<Dim>,
    scale_shape: Vec<Dim>,
    axis: usize,
    block: i64,
    single: bool,
}

impl ScaleIndex {
    pub(crate) fn new(x: &TensorSig, scale: &TensorSig, axis: i64, block: i64) -> Gen<ScaleIndex> {
        let single = scale.shape.iter().all(|d| d.as_const() == Some(1));
        let axis = if single {
            0
        } else {
            resolve_axis(axis, x.shape.len())?
        };
        if !single && block == 0 && scale.shape.len() != 1 {
            return Err(KernelError::Unsupported(format!(
                "a per-axis scale must be 1-D, found shape {:?}",
                scale.shape
            )));
        }
        if block > 0 && scale.shape.len() != x.shape.len() {
            return Err(KernelError::Unsupported(
                "a blocked scale must have the rank of its input".into(),
            ));
        }
        Ok(ScaleIndex {
            shape: x.shape.clone(),
            scale_shape: scale.shape.clone(),
            axis,
            block,
            single,
        })
    }

    /// The index of element `index`'s scale.
    pub(crate) fn at<'ctx>(&self, cg: &Cg<'ctx>, index: IntValue<'ctx>) -> Gen<IntValue<'ctx>> {
        if self.single {
            return Ok(cg.c(0));
        }
        if self.block == 0 {
            let inner = cg.product(&self.shape[self.axis + 1..])?;
            return cg.rem(cg.div(index, inner)?, cg.dim(&self.shape[self.axis])?);
        }
        let mut c = coords(cg, index, &self.shape)?;
        c[self.axis] = cg.div(c[self.axis], cg.c(self.block))?;
        linear(cg, &c, &self.scale_shape)
    }
}

/// The saturating code of `x` in the minifloat `dtype`, by the GPU's conversion instruction
/// where the target has one (`cvt.rn.satfinite`: FP8 from sm_89 on, FP4 on sm_100a and the
/// sm_120 family), else as [`encode_minifloat`] computes it: the same codes, NaN's sign aside.
pub(crate) fn encode_saturated<'ctx>(
    cg: &Cg<'ctx>,
    dtype: DType,
    x: FloatValue<'ctx>,
) -> Gen<IntValue<'ctx>> {
    let instruction = match (cg.target, dtype) {
        (Target::Gpu(sm), DType::F8E4M3FN) if sm.has_fp8_mma() => "llvm.nvvm.ff.to.e4m3x2.rn",
        (Target::Gpu(sm), DType::F8E5M2) if sm.has_fp8_mma() => "llvm.nvvm.ff.to.e5m2x2.rn",
        (Target::Gpu(Sm::Sm100a | Sm::Sm120a | Sm::Sm121a), DType::F4E2M1) => {
            "llvm.nvvm.ff.to.e2m1x2.rn.satfinite"
        }
        _ => return encode_minifloat(cg, dtype, x, true),
    };
    // The pair's second value lands in the low byte.
    let pair = cg
        .call(
            instruction,
            cg.cx.i16_type().into(),
            &[cg.f(0.0).into(), x.into()],
        )?
        .into_int_value();
    let wide = cg.b.build_int_z_extend(pair, cg.i64t(), "")?;
    let mask = if dtype == DType::F4E2M1 { 0xF } else { 0xFF };
    Ok(cg.b.build_and(wide, cg.c(mask), "")?)
}

/// The value of `q` (already scaled) quantized to integer `dtype`, as a signed integer:
/// rounded half to even, plus the zero point, clamped to the type's range.
pub(crate) fn quantize_int<'ctx>(
    cg: &Cg<'ctx>,
    dtype: DType,
    q: FloatValue<'ctx>,
    zero: Option<FloatValue<'ctx>>,
) -> Gen<IntValue<'ctx>> {
    let (lo, hi) = int_limits(dtype).ok_or_else(|| {
        KernelError::Unsupported(format!("quantizing to {dtype} has no GPU kernel"))
    })?;
    let mut r = cg.fcall1("llvm.rint.f32", q)?;
    if let Some(z) = zero {
        r = cg.fadd(r, z)?;
    }
    let r = cg.fmin(cg.fmax(r, cg.f(lo as f64))?, cg.f(hi as f64))?;
    cg.ftoi(r)
}

/// The integer code of `q` (already scaled) for integer `dtype`: rounded half to even, plus
/// the zero point, clamped to the type's range.
pub(crate) fn encode_int<'ctx>(
    cg: &Cg<'ctx>,
    dtype: DType,
    q: FloatValue<'ctx>,
    zero: Option<FloatValue<'ctx>>,
) -> Gen<IntValue<'ctx>> {
    let r = quantize_int(cg, dtype, q, zero)?;
    Ok(cg.b.build_and(
        r,
        cg.c(if dtype.bits() >= 64 {
            -1
        } else {
            (1i64 << dtype.bits()) - 1
        }),
        "",
    )?)
}

/// Generates a `QuantizeLinear`, `DequantizeLinear` or `RoundToBlocks` kernel.
pub fn generate<'ctx>(cx: &'ctx Context, req: &Request) -> Gen<Generated<'ctx>> {
    match req.op {
        Op::RoundToBlocks { format } => return generate_round(cx, req, *format),
        Op::DynamicQuantizeLinear => return generate_dynamic(cx, req),
        _ => {}
    }
    let mut cg = req.begin(cx, BLOCK);
    let x = req.input(0)?.clone();
    let scale = req.input(1)?.clone();
    let zero = req.inputs.get(2).cloned().flatten();
    let out = req.outputs[0].clone();
    let (axis, block) = match req.op {
        Op::QuantizeLinear {
            axis, block_size, ..
        }
        | Op::DequantizeLinear {
            axis, block_size, ..
        } => (*axis, *block_size),
        _ => unreachable!("plan dispatches only quantization ops here"),
    };
    let index = ScaleIndex::new(&x, &scale, axis, block)?;
    let x_read = Codes::new(&mut cg, x.dtype, req.input_param(0));
    let scale_read = Codes::new(&mut cg, scale.dtype, req.input_param(1));
    let zero_read = zero
        .as_ref()
        .map(|z| Codes::new(&mut cg, z.dtype, req.input_param(2)));
    let n = cg.product(&x.shape)?;
    // The scale and zero point of element `i`.
    let scaling =
        |cg: &Cg<'ctx>, i: IntValue<'ctx>| -> Gen<(FloatValue<'ctx>, Option<FloatValue<'ctx>>)> {
            let s = index.at(cg, i)?;
            let z = match &zero_read {
                Some(r) => Some(r.read(cg, s)?),
                None => None,
            };
            Ok((scale_read.read(cg, s)?, z))
        };
    // Elements each thread takes per loop step (4 where one load reads four).
    let mut per_thread = 1;
    let variant = match req.op {
        Op::DequantizeLinear { .. } => {
            cg.for_each_thread_item(cg.c(0), n, |cg, i| {
                let v = x_read.read(cg, i)?;
                let (s, z) = scaling(cg, i)?;
                let centered = match z {
                    Some(z) => cg.fsub(v, z)?,
                    None => v,
                };
                cg.store(out.dtype, cg.buffer(0), i, Val::F(cg.fmul(centered, s)?))
            })?;
            format!("dequantize {}->{}", x.dtype, out.dtype)
        }
        Op::QuantizeLinear { saturate, .. } => {
            let saturate = *saturate;
            // The code of element `i`, whose value is `v`.
            let code_of =
                |cg: &Cg<'ctx>, i: IntValue<'ctx>, v: FloatValue<'ctx>| -> Gen<IntValue<'ctx>> {
                    let (s, z) = scaling(cg, i)?;
                    let q = cg.fdiv(v, s)?;
                    if is_minifloat(out.dtype) {
                        let q = match z {
                            Some(z) => cg.fadd(q, z)?,
                            None => q,
                        };
                        encode_minifloat(cg, out.dtype, q, saturate)
                    } else {
                        encode_int(cg, out.dtype, q, z)
                    }
                };
            let code = |cg: &Cg<'ctx>, i: IntValue<'ctx>| code_of(cg, i, x_read.read(cg, i)?);
            let i8t = cg.cx.i8_type();
            if is_packed(out.dtype) {
                let out_buffer = cg.buffer(0);
                store_packed(&mut cg, out.dtype, out_buffer, n, |cg, i| code(cg, i))?;
            } else if out.dtype.bits() == 8 {
                // From f32, four values a thread: one 128-bit load, one 32-bit store of their
                // codes; the scalar loop takes the rest.
                let start = if x.dtype == DType::F32 {
                    per_thread = 4;
                    let n4 = cg.div(n, cg.c(4))?;
                    cg.for_each_thread_item(cg.c(0), n4, |cg, j| {
                        let base = cg.mul(j, cg.c(4))?;
                        let values = cg.load_f32x4(cg.buffer(req.input_param(0)), base)?;
                        let mut word = cg.c(0);
                        for (lane, v) in (0i64..).zip(values) {
                            let code = code_of(cg, cg.add(base, cg.c(lane))?, v)?;
                            let code = cg.b.build_and(code, cg.c(0xFF), "")?;
                            let code = cg.b.build_left_shift(code, cg.c(8 * lane), "")?;
                            word = cg.b.build_or(word, code, "")?;
                        }
                        let word = cg.b.build_int_truncate(word, cg.cx.i32_type(), "")?;
                        let ptr = cg.gep(DType::U8, cg.buffer(0), base)?;
                        cg.store_aligned(ptr, word, 4)
                    })?;
                    cg.mul(n4, cg.c(4))?
                } else {
                    cg.c(0)
                };
                cg.for_each_thread_item(start, n, |cg, i| {
                    let byte = cg.b.build_int_truncate(code(cg, i)?, i8t, "")?;
                    cg.store_raw(i8t.into(), cg.buffer(0), i, byte.into())
                })?;
            } else {
                cg.for_each_thread_item(cg.c(0), n, |cg, i| {
                    cg.store(out.dtype, cg.buffer(0), i, Val::I(code(cg, i)?))
                })?;
            }
            let vec4 = if per_thread == 4 { " vec4" } else { "" };
            format!("quantize {}->{}{vec4}", x.dtype, out.dtype)
        }
        _ => unreachable!("plan dispatches only quantization ops here"),
    };
    let launch = Launch {
        grid: x
            .numel()
            .ceil_div(&Dim::known(per_thread * i64::from(BLOCK))),
        block: BLOCK,
        shared_bytes: 0,
        dynamic_shared_bytes: 0,
    };
    let covers = vec![req.op.name()];
    let info = req.describe(Family::Quantization, variant, covers, launch);
    Ok(Generated {
        info,
        module: cg.finish()?,
    })
}

/// Threads of the one block that quantizes a tensor by its own range.
const DYNAMIC_BLOCK: u32 = 1024;

/// `DynamicQuantizeLinear`: the range of the whole tensor (with zero) gives a u8 scale and
/// zero point, by which every element is then quantized. One block: its threads find the
/// range together (a block reduction), then each quantizes its share, so no second kernel
/// waits on a grid-wide result. Reference: the CPU executor's `dynamic_quantize`.
fn generate_dynamic<'ctx>(cx: &'ctx Context, req: &Request) -> Gen<Generated<'ctx>> {
    let x = req.input(0)?.clone();
    let mut cg = req.begin(cx, DYNAMIC_BLOCK);
    let n = cg.product(&x.shape)?;
    let x_at = cg.buffer(req.input_param(0));
    let (start, step) = (cg.tid()?, cg.ntid()?);
    let zero = cg.f(0.0);
    // NaNs are skipped, as f32::min and f32::max skip them.
    let range = cg.fold_range(
        start,
        n,
        step,
        vec![zero.into(), zero.into()],
        |cg, i, r| {
            let v = cg.load(x.dtype, x_at, i)?.float(cg)?;
            let lo = cg.fcall2("llvm.minnum.f32", r[0].into_float_value(), v)?;
            let hi = cg.fcall2("llvm.maxnum.f32", r[1].into_float_value(), v)?;
            Ok(vec![lo.into(), hi.into()])
        },
    )?;
    let lo = cg.block_reduce(range[0].into_float_value(), Combine::Min)?;
    let hi = cg.block_reduce(range[1].into_float_value(), Combine::Max)?;
    let scale = cg.fdiv(cg.fsub(hi, lo)?, cg.f(255.0))?;
    let flat = cg.fcmp(FloatPredicate::OEQ, scale, cg.f(0.0))?;
    let u8_range = |cg: &Cg<'ctx>, v: FloatValue<'ctx>| -> Gen<FloatValue<'ctx>> {
        let clamped = cg.fcall2(
            "llvm.minnum.f32",
            cg.fcall2("llvm.maxnum.f32", v, cg.f(0.0))?,
            cg.f(255.0),
        )?;
        // NaN becomes 0, as a float-to-u8 conversion makes it on the CPU.
        let nan = cg.fcmp(FloatPredicate::UNO, v, v)?;
        cg.fsel(nan, cg.f(0.0), clamped)
    };
    let point = cg.fcall1("llvm.rint.f32", cg.fdiv(cg.fneg(lo)?, scale)?)?;
    let point = cg.fsel(flat, cg.f(0.0), u8_range(&cg, point)?)?;
    let (y_dtype, scale_dtype, point_dtype) = (
        req.outputs[0].dtype,
        req.outputs[1].dtype,
        req.outputs[2].dtype,
    );
    let (y_at, scale_at, point_at) = (cg.buffer(0), cg.buffer(1), cg.buffer(2));
    cg.for_range(start, n, step, |cg, i| {
        let v = cg.load(x.dtype, x_at, i)?.float(cg)?;
        let q = cg.fcall1("llvm.rint.f32", cg.fdiv(v, scale)?)?;
        let q = cg.fsel(flat, cg.f(0.0), q)?;
        let q = u8_range(cg, cg.fadd(q, point)?)?;
        let code = cg.ftoi(q)?;
        cg.store(y_dtype, y_at, i, Val::I(code))
    })?;
    let first = cg.icmp(IntPredicate::EQ, start, cg.c(0))?;
    cg.if_then(first, |cg| {
        cg.store(scale_dtype, scale_at, cg.c(0), Val::F(scale))?;
        let code = cg.ftoi(point)?;
        cg.store(point_dtype, point_at, cg.c(0), Val::I(code))
    })?;
    let launch = Launch {
        grid: Dim::known(1),
        block: DYNAMIC_BLOCK,
        // The block reduction's scratch (one f32 per warp, and one).
        shared_bytes: 33 * 4,
        dynamic_shared_bytes: 0,
    };
    let info = req.describe(
        Family::Quantization,
        "dynamic u8, one block",
        vec![req.op.name()],
        launch,
    );
    Ok(Generated {
        info,
        module: cg.finish()?,
    })
}

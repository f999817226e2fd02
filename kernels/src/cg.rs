//! The code generation context every kernel generator writes through.
//!
//! A [`Cg`] owns one LLVM module holding one kernel. Generators are written in the
//! thread-strided style (`for i in tid..n step ntid`, `for unit in ctaid..units step nctaid`), so
//! the same IR is correct for any block and grid size: on a GPU it runs with the launch the
//! kernel asks for, and on the host ([`Target::Host`]) with one thread in one block, which is how
//! the tests run generated IR against the CPU reference without a GPU.

use crate::narrow;
use crate::target::Target;
use crate::KernelError;
use inkwell::builder::Builder;
use inkwell::context::Context;
use inkwell::module::{Linkage, Module};
use inkwell::types::{BasicType, BasicTypeEnum, FloatType, FunctionType, IntType};
use inkwell::values::{
    BasicMetadataValueEnum, BasicValue, BasicValueEnum, FloatValue, FunctionValue,
    InstructionValue, IntValue, PointerValue,
};
use inkwell::{AddressSpace, FloatPredicate, IntPredicate};
use sparkc_ir::{Atom, DType, Dim, Poly};
use std::sync::Arc;

/// Result of code generation.
pub type Gen<T> = Result<T, KernelError>;

/// LLVM's calling convention number for `ptx_kernel`.
const PTX_KERNEL_CC: u32 = 71;

/// How a reduction combines values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combine {
    /// Sum.
    Sum,
    /// Maximum.
    Max,
    /// Minimum.
    Min,
    /// Product.
    Prod,
}

impl Combine {
    /// The value that changes nothing.
    pub fn identity(self) -> f64 {
        match self {
            Combine::Sum => 0.0,
            Combine::Max => f64::NEG_INFINITY,
            Combine::Min => f64::INFINITY,
            Combine::Prod => 1.0,
        }
    }
}

/// The code generation context of one kernel.
pub struct Cg<'ctx> {
    /// The LLVM context.
    pub cx: &'ctx Context,
    /// The module holding this kernel and nothing else.
    pub module: Module<'ctx>,
    /// The instruction builder, positioned in the kernel.
    pub b: Builder<'ctx>,
    /// Where the code runs.
    pub target: Target,
    /// The kernel.
    pub func: FunctionValue<'ctx>,
    buffers: usize,
    symbols: Vec<Arc<str>>,
    shared_count: usize,
    reduce_scratch: Option<PointerValue<'ctx>>,
}

impl<'ctx> Cg<'ctx> {
    /// A kernel `name(ptr × buffers, i64 × symbols)` with its entry block.
    pub fn new(
        cx: &'ctx Context,
        name: &str,
        target: Target,
        buffers: usize,
        symbols: &[Arc<str>],
        max_threads: u32,
    ) -> Cg<'ctx> {
        let module = cx.create_module(name);
        let ptr = cx.ptr_type(AddressSpace::default());
        let mut params: Vec<inkwell::types::BasicMetadataTypeEnum> = vec![ptr.into(); buffers];
        params.extend(std::iter::repeat_n(
            inkwell::types::BasicMetadataTypeEnum::from(cx.i64_type()),
            symbols.len(),
        ));
        let func = module.add_function(name, cx.void_type().fn_type(&params, false), None);
        if matches!(target, Target::Gpu(_)) {
            func.set_call_conventions(PTX_KERNEL_CC);
        }
        for i in 0..buffers {
            let noalias = cx.create_enum_attribute(
                inkwell::attributes::Attribute::get_named_enum_kind_id("noalias"),
                0,
            );
            func.add_attribute(inkwell::attributes::AttributeLoc::Param(i as u32), noalias);
        }
        let b = cx.create_builder();
        let entry = cx.append_basic_block(func, "entry");
        b.position_at_end(entry);
        let cg = Cg {
            cx,
            module,
            b,
            target,
            func,
            buffers,
            symbols: symbols.to_vec(),
            shared_count: 0,
            reduce_scratch: None,
        };
        cg.max_threads_per_block(max_threads);
        cg
    }

    /// Asks `ptxas` to fit `blocks` blocks on each multiprocessor (it caps the registers per
    /// thread to match); no effect on the host.
    pub fn min_blocks_per_sm(&self, blocks: u32) {
        if matches!(self.target, Target::Gpu(_)) {
            let attr = self
                .cx
                .create_string_attribute("nvvm.minctasm", &blocks.to_string());
            self.func
                .add_attribute(inkwell::attributes::AttributeLoc::Function, attr);
        }
    }

    /// Declares the most threads a block of this kernel is launched with (`.maxntid`,
    /// replacing what [`Cg::new`] declared), which with [`Cg::min_blocks_per_sm`] bounds the
    /// registers a thread may use; no effect on the host.
    pub fn max_threads_per_block(&self, threads: u32) {
        if matches!(self.target, Target::Gpu(_)) {
            self.func.remove_string_attribute(
                inkwell::attributes::AttributeLoc::Function,
                "nvvm.maxntid",
            );
            let attr = self
                .cx
                .create_string_attribute("nvvm.maxntid", &threads.to_string());
            self.func
                .add_attribute(inkwell::attributes::AttributeLoc::Function, attr);
        }
    }

    /// Ends the kernel with `ret void`.
    pub fn finish(self) -> Gen<Module<'ctx>> {
        self.b.build_return(None)?;
        if let Err(e) = self.module.verify() {
            return Err(KernelError::Llvm(format!(
                "generated IR does not verify: {}",
                e.to_string()
            )));
        }
        Ok(self.module)
    }

    /// The `i`-th buffer parameter.
    pub fn buffer(&self, i: usize) -> PointerValue<'ctx> {
        debug_assert!(i < self.buffers);
        self.func
            .get_nth_param(i as u32)
            .expect("buffer parameter")
            .into_pointer_value()
    }

    // ---- integers -------------------------------------------------------------------------

    /// The `i64` type.
    pub fn i64t(&self) -> IntType<'ctx> {
        self.cx.i64_type()
    }

    /// An `i64` constant.
    pub fn c(&self, v: i64) -> IntValue<'ctx> {
        self.cx.i64_type().const_int(v as u64, true)
    }

    /// `a + b`.
    pub fn add(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> Gen<IntValue<'ctx>> {
        Ok(self.b.build_int_add(a, b, "")?)
    }

    /// `a - b`.
    pub fn sub(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> Gen<IntValue<'ctx>> {
        Ok(self.b.build_int_sub(a, b, "")?)
    }

    /// `a * b`.
    pub fn mul(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> Gen<IntValue<'ctx>> {
        Ok(self.b.build_int_mul(a, b, "")?)
    }

    /// `a / b`, truncating (operands are non-negative sizes and indices).
    pub fn div(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> Gen<IntValue<'ctx>> {
        Ok(self.b.build_int_signed_div(a, b, "")?)
    }

    /// `a % b` (operands are non-negative).
    pub fn rem(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> Gen<IntValue<'ctx>> {
        Ok(self.b.build_int_signed_rem(a, b, "")?)
    }

    /// `floor(a / b)` for any sign of `a` and a positive `b`.
    pub fn floor_div(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> Gen<IntValue<'ctx>> {
        let q = self.div(a, b)?;
        let r = self.rem(a, b)?;
        let neg = self.icmp(IntPredicate::SLT, r, self.c(0))?;
        let fix = self.b.build_int_z_extend(neg, self.i64t(), "")?;
        self.sub(q, fix)
    }

    /// Integer comparison.
    pub fn icmp(
        &self,
        p: IntPredicate,
        a: IntValue<'ctx>,
        b: IntValue<'ctx>,
    ) -> Gen<IntValue<'ctx>> {
        Ok(self.b.build_int_compare(p, a, b, "")?)
    }

    /// `min(a, b)`, signed.
    pub fn imin(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> Gen<IntValue<'ctx>> {
        let lt = self.icmp(IntPredicate::SLT, a, b)?;
        Ok(self.b.build_select(lt, a, b, "")?.into_int_value())
    }

    /// `max(a, b)`, signed.
    pub fn imax(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> Gen<IntValue<'ctx>> {
        let gt = self.icmp(IntPredicate::SGT, a, b)?;
        Ok(self.b.build_select(gt, a, b, "")?.into_int_value())
    }

    /// `cond ? a : b` for any first-class values.
    pub fn select<V: BasicValue<'ctx>>(
        &self,
        cond: IntValue<'ctx>,
        a: V,
        b: V,
    ) -> Gen<BasicValueEnum<'ctx>> {
        Ok(self.b.build_select(cond, a, b, "")?)
    }

    /// Logical and of two `i1`.
    pub fn and(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> Gen<IntValue<'ctx>> {
        Ok(self.b.build_and(a, b, "")?)
    }

    /// A size as an `i64`, symbols read from the kernel's parameters.
    pub fn dim(&self, d: &Dim) -> Gen<IntValue<'ctx>> {
        match d {
            Dim::Expr(p) => self.poly_value(p),
            Dim::Dynamic => Err(KernelError::Unsupported(
                "a data-dependent size cannot be a kernel parameter".into(),
            )),
        }
    }

    fn poly_value(&self, p: &Poly) -> Gen<IntValue<'ctx>> {
        let mut total = self.c(0);
        for (mono, coef) in p.terms() {
            let mut term = self.c(coef);
            for atom in mono {
                let factor = match atom {
                    Atom::Sym(name) => self.symbol(name)?,
                    Atom::FloorDiv(num, divisor) => {
                        self.floor_div(self.poly_value(num)?, self.c(*divisor))?
                    }
                };
                term = self.mul(term, factor)?;
            }
            total = self.add(total, term)?;
        }
        Ok(total)
    }

    fn symbol(&self, name: &str) -> Gen<IntValue<'ctx>> {
        let index = self
            .symbols
            .iter()
            .position(|s| &**s == name)
            .ok_or_else(|| {
                KernelError::Unsupported(format!("symbol `{name}` is not a parameter"))
            })?;
        Ok(self
            .func
            .get_nth_param((self.buffers + index) as u32)
            .expect("symbol parameter")
            .into_int_value())
    }

    /// The product of sizes.
    pub fn product(&self, dims: &[Dim]) -> Gen<IntValue<'ctx>> {
        let mut n = self.c(1);
        for d in dims {
            n = self.mul(n, self.dim(d)?)?;
        }
        Ok(n)
    }

    // ---- floats ---------------------------------------------------------------------------

    /// The `f32` type.
    pub fn f32t(&self) -> FloatType<'ctx> {
        self.cx.f32_type()
    }

    /// An `f32` constant.
    pub fn f(&self, v: f64) -> FloatValue<'ctx> {
        self.cx.f32_type().const_float(v)
    }

    /// `a + b`.
    pub fn fadd(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        Ok(self.b.build_float_add(a, b, "")?)
    }

    /// `a - b`.
    pub fn fsub(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        Ok(self.b.build_float_sub(a, b, "")?)
    }

    /// `a * b`.
    pub fn fmul(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        Ok(self.b.build_float_mul(a, b, "")?)
    }

    /// `a / b`, correctly rounded.
    pub fn fdiv(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        Ok(self.b.build_float_div(a, b, "")?)
    }

    /// `-a`.
    pub fn fneg(&self, a: FloatValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        Ok(self.b.build_float_neg(a, "")?)
    }

    /// Float comparison (ordered predicates are false on NaN).
    pub fn fcmp(
        &self,
        p: FloatPredicate,
        a: FloatValue<'ctx>,
        b: FloatValue<'ctx>,
    ) -> Gen<IntValue<'ctx>> {
        Ok(self.b.build_float_compare(p, a, b, "")?)
    }

    /// `cond ? a : b` on floats.
    pub fn fsel(
        &self,
        cond: IntValue<'ctx>,
        a: FloatValue<'ctx>,
        b: FloatValue<'ctx>,
    ) -> Gen<FloatValue<'ctx>> {
        Ok(self.select(cond, a, b)?.into_float_value())
    }

    /// Calls an LLVM intrinsic or declared function returning a value.
    pub fn call(
        &self,
        name: &str,
        ret: BasicTypeEnum<'ctx>,
        args: &[BasicValueEnum<'ctx>],
    ) -> Gen<BasicValueEnum<'ctx>> {
        let params: Vec<_> = args.iter().map(|a| a.get_type().into()).collect();
        let ty = ret.fn_type(&params, false);
        let f = self
            .module
            .get_function(name)
            .unwrap_or_else(|| self.module.add_function(name, ty, None));
        let args: Vec<BasicMetadataValueEnum> = args.iter().map(|&a| a.into()).collect();
        self.b
            .build_call(f, &args, "")?
            .try_as_basic_value()
            .basic()
            .ok_or_else(|| KernelError::Llvm(format!("{name} returned no value")))
    }

    /// Calls an LLVM intrinsic or declared function returning nothing.
    pub fn call_void(&self, name: &str, args: &[BasicValueEnum<'ctx>]) -> Gen<()> {
        let params: Vec<_> = args.iter().map(|a| a.get_type().into()).collect();
        let ty = self.cx.void_type().fn_type(&params, false);
        let f = self
            .module
            .get_function(name)
            .unwrap_or_else(|| self.module.add_function(name, ty, None));
        let args: Vec<BasicMetadataValueEnum> = args.iter().map(|&a| a.into()).collect();
        self.b.build_call(f, &args, "")?;
        Ok(())
    }

    /// A unary `f32` intrinsic such as `llvm.sqrt.f32`.
    pub fn fcall1(&self, name: &str, a: FloatValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        Ok(self
            .call(name, self.f32t().into(), &[a.into()])?
            .into_float_value())
    }

    /// A binary `f32` intrinsic such as `llvm.maxnum.f32`.
    pub fn fcall2(
        &self,
        name: &str,
        a: FloatValue<'ctx>,
        b: FloatValue<'ctx>,
    ) -> Gen<FloatValue<'ctx>> {
        Ok(self
            .call(name, self.f32t().into(), &[a.into(), b.into()])?
            .into_float_value())
    }

    /// `a * b + c` with one rounding.
    pub fn fma(
        &self,
        a: FloatValue<'ctx>,
        b: FloatValue<'ctx>,
        c: FloatValue<'ctx>,
    ) -> Gen<FloatValue<'ctx>> {
        Ok(self
            .call(
                "llvm.fma.f32",
                self.f32t().into(),
                &[a.into(), b.into(), c.into()],
            )?
            .into_float_value())
    }

    /// The larger, NaN-propagating as ONNX's Max and MaxPool are.
    pub fn fmax(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        self.fcall2("llvm.maximum.f32", a, b)
    }

    /// The smaller, NaN-propagating.
    pub fn fmin(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        self.fcall2("llvm.minimum.f32", a, b)
    }

    /// `i64` to `f32`.
    pub fn itof(&self, a: IntValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        Ok(self.b.build_signed_int_to_float(a, self.f32t(), "")?)
    }

    /// `f32` to `i64`, truncated toward zero and saturated (NaN as 0), as Rust's `as` and the
    /// CPU executor convert; a plain `fptosi` of NaN or of a value out of range is poison.
    pub fn ftoi(&self, a: FloatValue<'ctx>) -> Gen<IntValue<'ctx>> {
        Ok(self
            .call("llvm.fptosi.sat.i64.f32", self.i64t().into(), &[a.into()])?
            .into_int_value())
    }

    /// `f32` to integer `dtype`, held in an `i64` to be wrapped to its width: truncated toward
    /// zero within i64's range, saturated to `dtype`'s range beyond it (NaN as 0), as the CPU
    /// executor casts (numpy's `astype` where that is defined).
    pub fn ftoi_as(&self, dtype: DType, a: FloatValue<'ctx>) -> Gen<IntValue<'ctx>> {
        let wide = self.ftoi(a)?;
        let (lo, hi) = sparkc_ir::formats::int_range(dtype);
        let saturated = self.imin(self.imax(wide, self.c(lo))?, self.c(hi))?;
        let magnitude = self.fcall1("llvm.fabs.f32", a)?;
        let beyond = self.fcmp(FloatPredicate::OGE, magnitude, self.f(9.2e18))?;
        Ok(self.select(beyond, saturated, wide)?.into_int_value())
    }

    // ---- memory ---------------------------------------------------------------------------

    /// The LLVM type a dtype is stored as.
    pub fn storage_type(&self, dtype: DType) -> Gen<BasicTypeEnum<'ctx>> {
        Ok(match dtype {
            DType::F32 => self.cx.f32_type().into(),
            DType::F16 => self.cx.f16_type().into(),
            DType::BF16 => self.cx.bf16_type().into(),
            DType::I64 | DType::U64 => self.cx.i64_type().into(),
            DType::I32 | DType::U32 => self.cx.i32_type().into(),
            DType::I16 | DType::U16 => self.cx.i16_type().into(),
            DType::I8 | DType::U8 | DType::Bool => self.cx.i8_type().into(),
            // Codes, decoded and encoded by `load` and `store`.
            d if narrow::is_minifloat(d) && !narrow::is_packed(d) => self.cx.i8_type().into(),
            other => {
                return Err(KernelError::Unsupported(format!(
                    "{} tensors have no GPU kernels yet",
                    other.name()
                )))
            }
        })
    }

    /// The address of element `index` of a buffer of `dtype`.
    pub fn gep(
        &self,
        dtype: DType,
        base: PointerValue<'ctx>,
        index: IntValue<'ctx>,
    ) -> Gen<PointerValue<'ctx>> {
        let ty = self.storage_type(dtype)?;
        // SAFETY: generated kernels index within the bounds their launch checks.
        Ok(unsafe { self.b.build_in_bounds_gep(ty, base, &[index], "")? })
    }

    /// The four `f32`s from element `index` (a multiple of 4) of a 16-byte aligned `f32`
    /// buffer, read with one 128-bit load.
    pub fn load_f32x4(
        &self,
        base: PointerValue<'ctx>,
        index: IntValue<'ctx>,
    ) -> Gen<[FloatValue<'ctx>; 4]> {
        let ptr = self.gep(DType::F32, base, index)?;
        let load = self.b.build_load(self.f32t().vec_type(4), ptr, "")?;
        aligned(load.as_instruction_value(), 16)?;
        let vector = load.into_vector_value();
        let lane = |l: u64| -> Gen<FloatValue<'ctx>> {
            let i = self.cx.i32_type().const_int(l, false);
            Ok(self
                .b
                .build_extract_element(vector, i, "")?
                .into_float_value())
        };
        Ok([lane(0)?, lane(1)?, lane(2)?, lane(3)?])
    }

    /// Stores `value` at `ptr` as one access of `bytes` alignment.
    pub fn store_aligned(
        &self,
        ptr: PointerValue<'ctx>,
        value: impl BasicValue<'ctx>,
        bytes: u32,
    ) -> Gen<()> {
        let store = self.b.build_store(ptr, value)?;
        aligned(Some(store), bytes)
    }

    /// Loads element `index` as a compute value: floats as `f32`, integers and bools as `i64`.
    pub fn load(
        &self,
        dtype: DType,
        base: PointerValue<'ctx>,
        index: IntValue<'ctx>,
    ) -> Gen<Val<'ctx>> {
        if narrow::is_packed(dtype) {
            let code = narrow::load_packed_code(self, dtype, base, index)?;
            return narrow::widen_code(self, dtype, code);
        }
        let ty = self.storage_type(dtype)?;
        let ptr = self.gep(dtype, base, index)?;
        let raw = self.b.build_load(ty, ptr, "")?;
        self.widen(dtype, raw)
    }

    /// A stored value as a compute value.
    pub fn widen(&self, dtype: DType, raw: BasicValueEnum<'ctx>) -> Gen<Val<'ctx>> {
        Ok(match dtype {
            DType::F32 => Val::F(raw.into_float_value()),
            DType::BF16 if self.target == Target::Host => Val::F(self.bf16_to_f32(raw)?),
            d if narrow::is_minifloat(d) => {
                let code = self
                    .b
                    .build_int_z_extend(raw.into_int_value(), self.i64t(), "")?;
                Val::F(narrow::decode_minifloat(self, d, code)?)
            }
            DType::F16 | DType::BF16 => Val::F(self.b.build_float_ext(
                raw.into_float_value(),
                self.f32t(),
                "",
            )?),
            DType::U64 | DType::I64 => Val::I(raw.into_int_value()),
            DType::U32 | DType::U16 | DType::U8 | DType::Bool => Val::I(
                self.b
                    .build_int_z_extend(raw.into_int_value(), self.i64t(), "")?,
            ),
            _ => Val::I(
                self.b
                    .build_int_s_extend(raw.into_int_value(), self.i64t(), "")?,
            ),
        })
    }

    /// Stores a compute value as element `index` of a buffer of `dtype`, converting as ONNX's
    /// Cast does (float to int truncates toward zero, to bool compares with zero).
    pub fn store(
        &self,
        dtype: DType,
        base: PointerValue<'ctx>,
        index: IntValue<'ctx>,
        value: Val<'ctx>,
    ) -> Gen<()> {
        let ptr = self.gep(dtype, base, index)?;
        let raw = self.narrow(dtype, value)?;
        self.b.build_store(ptr, raw)?;
        Ok(())
    }

    /// A BF16 value as f32, in integer ops (the host JIT has no BF16 conversion routines).
    fn bf16_to_f32(&self, raw: BasicValueEnum<'ctx>) -> Gen<FloatValue<'ctx>> {
        let i32t = self.cx.i32_type();
        let bits = self.b.build_bit_cast(raw, self.cx.i16_type(), "")?;
        let wide = self.b.build_int_z_extend(bits.into_int_value(), i32t, "")?;
        let shifted = self
            .b
            .build_left_shift(wide, i32t.const_int(16, false), "")?;
        Ok(self
            .b
            .build_bit_cast(shifted, self.f32t(), "")?
            .into_float_value())
    }

    /// An f32 rounded to BF16 (to nearest, ties to even; NaN stays NaN), in integer ops.
    fn f32_to_bf16(&self, f: FloatValue<'ctx>) -> Gen<BasicValueEnum<'ctx>> {
        let i32t = self.cx.i32_type();
        let k = |v: u64| i32t.const_int(v, false);
        let bits = self.b.build_bit_cast(f, i32t, "")?.into_int_value();
        let odd = self
            .b
            .build_and(self.b.build_right_shift(bits, k(16), false, "")?, k(1), "")?;
        let rounded = self
            .b
            .build_int_add(bits, self.b.build_int_add(odd, k(0x7FFF), "")?, "")?;
        let top = self.b.build_right_shift(rounded, k(16), false, "")?;
        let nan = self.fcmp(FloatPredicate::UNO, f, f)?;
        let top = self
            .b
            .build_select(nan, k(0x7FC0), top, "")?
            .into_int_value();
        let half = self.b.build_int_truncate(top, self.cx.i16_type(), "")?;
        Ok(self.b.build_bit_cast(half, self.cx.bf16_type(), "")?)
    }

    /// A compute value converted to the storage type of `dtype`.
    pub fn narrow(&self, dtype: DType, value: Val<'ctx>) -> Gen<BasicValueEnum<'ctx>> {
        if narrow::is_packed(dtype) {
            return Err(KernelError::Unsupported(format!(
                "{dtype} elements are packed {} to a byte, and this kernel writes one element a \
                 thread",
                narrow::per_byte(dtype)
            )));
        }
        let ty = self.storage_type(dtype)?;
        if narrow::is_minifloat(dtype) {
            let code = narrow::store_code(self, dtype, value)?;
            return Ok(self
                .b
                .build_int_truncate(code, ty.into_int_type(), "")?
                .into());
        }
        Ok(match (dtype.is_float(), value) {
            (true, Val::F(f)) if dtype == DType::F32 => f.into(),
            (true, Val::F(f)) if dtype == DType::BF16 && self.target == Target::Host => {
                self.f32_to_bf16(f)?
            }
            (true, Val::F(f)) => self
                .b
                .build_float_trunc(f, ty.into_float_type(), "")?
                .into(),
            (true, Val::I(i)) => {
                let f = self.itof(i)?;
                if dtype == DType::F32 {
                    f.into()
                } else {
                    self.b
                        .build_float_trunc(f, ty.into_float_type(), "")?
                        .into()
                }
            }
            (false, v) if dtype == DType::Bool => {
                let nz = match v {
                    Val::F(f) => self.fcmp(FloatPredicate::UNE, f, self.f(0.0))?,
                    Val::I(i) => self.icmp(IntPredicate::NE, i, self.c(0))?,
                };
                self.b
                    .build_int_z_extend(nz, ty.into_int_type(), "")?
                    .into()
            }
            (false, Val::F(f)) => {
                let wide = self.ftoi_as(dtype, f)?;
                if ty.into_int_type().get_bit_width() == 64 {
                    wide.into()
                } else {
                    self.b
                        .build_int_truncate(wide, ty.into_int_type(), "")?
                        .into()
                }
            }
            (false, Val::I(i)) => {
                if ty.into_int_type().get_bit_width() == 64 {
                    i.into()
                } else {
                    self.b.build_int_truncate(i, ty.into_int_type(), "")?.into()
                }
            }
        })
    }

    /// A block-shared array of `len` elements of `ty` (a module global on the host).
    pub fn shared_array(&mut self, ty: BasicTypeEnum<'ctx>, len: u32) -> PointerValue<'ctx> {
        let space = match self.target {
            Target::Gpu(_) => AddressSpace::from(3u16),
            Target::Host => AddressSpace::default(),
        };
        let array = ty.array_type(len);
        let name = format!("smem{}", self.shared_count);
        self.shared_count += 1;
        let global = self.module.add_global(array, Some(space), &name);
        global.set_linkage(Linkage::Internal);
        global.set_initializer(&array.get_undef());
        global.set_alignment(16);
        global.as_pointer_value()
    }

    /// A read-only table of `f32` values (global memory on a GPU), indexed with [`Cg::load_raw`].
    pub fn f32_table(&mut self, values: &[f32]) -> PointerValue<'ctx> {
        let space = match self.target {
            Target::Gpu(_) => AddressSpace::from(1u16),
            Target::Host => AddressSpace::default(),
        };
        let f32t = self.f32t();
        let array = f32t.array_type(values.len() as u32);
        let init: Vec<_> = values
            .iter()
            .map(|&v| f32t.const_float(f64::from(v)))
            .collect();
        let name = format!("table{}", self.shared_count);
        self.shared_count += 1;
        let global = self.module.add_global(array, Some(space), &name);
        global.set_linkage(Linkage::Internal);
        global.set_constant(true);
        global.set_initializer(&f32t.const_array(&init));
        global.set_alignment(16);
        global.as_pointer_value()
    }

    /// The block's dynamic shared memory (sized at launch), as bytes; GPU only.
    pub fn dynamic_shared(&mut self) -> Gen<PointerValue<'ctx>> {
        if self.target == Target::Host {
            return Err(KernelError::Unsupported(
                "dynamic shared memory exists only on a GPU".into(),
            ));
        }
        let array = self.cx.i8_type().array_type(0);
        let global = self
            .module
            .add_global(array, Some(AddressSpace::from(3u16)), "smem_dynamic");
        global.set_linkage(Linkage::External);
        global.set_alignment(16);
        Ok(global.as_pointer_value())
    }

    /// A typed load through any pointer.
    pub fn load_raw(
        &self,
        ty: BasicTypeEnum<'ctx>,
        base: PointerValue<'ctx>,
        index: IntValue<'ctx>,
    ) -> Gen<BasicValueEnum<'ctx>> {
        // SAFETY: indices stay within the arrays the generators allocate.
        let ptr = unsafe { self.b.build_in_bounds_gep(ty, base, &[index], "")? };
        Ok(self.b.build_load(ty, ptr, "")?)
    }

    /// A typed store through any pointer.
    pub fn store_raw(
        &self,
        ty: BasicTypeEnum<'ctx>,
        base: PointerValue<'ctx>,
        index: IntValue<'ctx>,
        value: BasicValueEnum<'ctx>,
    ) -> Gen<()> {
        // SAFETY: indices stay within the arrays the generators allocate.
        let ptr = unsafe { self.b.build_in_bounds_gep(ty, base, &[index], "")? };
        self.b.build_store(ptr, value)?;
        Ok(())
    }

    // ---- threads --------------------------------------------------------------------------

    fn sreg(&self, reg: &str, host: i64) -> Gen<IntValue<'ctx>> {
        match self.target {
            Target::Host => Ok(self.c(host)),
            Target::Gpu(_) => {
                let name = format!("llvm.nvvm.read.ptx.sreg.{reg}");
                let v = self.call(&name, self.cx.i32_type().into(), &[])?;
                Ok(self
                    .b
                    .build_int_z_extend(v.into_int_value(), self.i64t(), "")?)
            }
        }
    }

    /// The thread's index in its block (`x`).
    pub fn tid(&self) -> Gen<IntValue<'ctx>> {
        self.sreg("tid.x", 0)
    }

    /// Threads per block (`x`).
    pub fn ntid(&self) -> Gen<IntValue<'ctx>> {
        self.sreg("ntid.x", 1)
    }

    /// The block's index in the grid (`x`).
    pub fn ctaid(&self) -> Gen<IntValue<'ctx>> {
        self.sreg("ctaid.x", 0)
    }

    /// Blocks in the grid (`x`).
    pub fn nctaid(&self) -> Gen<IntValue<'ctx>> {
        self.sreg("nctaid.x", 1)
    }

    /// Waits for every thread of the block (`bar.sync 0`); nothing on the host.
    pub fn barrier(&self) -> Gen<()> {
        if let Target::Gpu(_) = self.target {
            self.asm_void("bar.sync 0;", "~{memory}", &[])?;
        }
        Ok(())
    }

    /// Inline PTX with no result.
    pub fn asm_void(&self, asm: &str, constraints: &str, args: &[BasicValueEnum<'ctx>]) -> Gen<()> {
        let params: Vec<_> = args.iter().map(|a| a.get_type().into()).collect();
        let ty = self.cx.void_type().fn_type(&params, false);
        self.asm_call(ty, asm, constraints, args)?;
        Ok(())
    }

    /// Inline PTX returning a value or a struct of values. The call is convergent: barriers,
    /// `mma.sync` and `ldmatrix` need every thread of a warp (or block) at the same
    /// instruction, so LLVM must not duplicate or sink them into divergent paths (tail
    /// duplication once split a block reduction's `bar.sync` between lane 0 and the rest,
    /// which hangs a GPU).
    pub fn asm_call(
        &self,
        ty: FunctionType<'ctx>,
        asm: &str,
        constraints: &str,
        args: &[BasicValueEnum<'ctx>],
    ) -> Gen<Option<BasicValueEnum<'ctx>>> {
        let callee =
            self.cx
                .create_inline_asm(ty, asm.into(), constraints.into(), true, false, None, false);
        let args: Vec<BasicMetadataValueEnum> = args.iter().map(|&a| a.into()).collect();
        let call = self.b.build_indirect_call(ty, callee, &args, "")?;
        let convergent = self.cx.create_enum_attribute(
            inkwell::attributes::Attribute::get_named_enum_kind_id("convergent"),
            0,
        );
        call.add_attribute(inkwell::attributes::AttributeLoc::Function, convergent);
        Ok(call.try_as_basic_value().basic())
    }

    /// Combines `v` across the block; every thread gets the result. Needs a block size that is a
    /// multiple of 32 (at most 1024) on a GPU; on the host the one thread already holds it.
    pub fn block_reduce(&mut self, v: FloatValue<'ctx>, op: Combine) -> Gen<FloatValue<'ctx>> {
        if self.target == Target::Host {
            return Ok(v);
        }
        let warp = self.warp_reduce(v, op)?;
        // One scratch array serves every reduction of the kernel: each ends with a barrier.
        let scratch = match self.reduce_scratch {
            Some(s) => s,
            None => {
                let s = self.shared_array(self.f32t().into(), 33);
                self.reduce_scratch = Some(s);
                s
            }
        };
        let tid = self.tid()?;
        let lane = self.rem(tid, self.c(32))?;
        let wid = self.div(tid, self.c(32))?;
        let is_lane0 = self.icmp(IntPredicate::EQ, lane, self.c(0))?;
        self.if_then(is_lane0, |cg| {
            cg.store_raw(cg.f32t().into(), scratch, wid, warp.into())
        })?;
        self.barrier()?;
        let nwarps = self.div(self.ntid()?, self.c(32))?;
        let identity = self.f(op.identity());
        let in_range = self.icmp(IntPredicate::SLT, lane, nwarps)?;
        let safe_lane = self.select(in_range, lane, self.c(0))?.into_int_value();
        let partial = self
            .load_raw(self.f32t().into(), scratch, safe_lane)?
            .into_float_value();
        let partial = self.fsel(in_range, partial, identity)?;
        let total = self.warp_reduce(partial, op)?;
        let is_t0 = self.icmp(IntPredicate::EQ, tid, self.c(0))?;
        self.if_then(is_t0, |cg| {
            cg.store_raw(cg.f32t().into(), scratch, cg.c(32), total.into())
        })?;
        self.barrier()?;
        let result = self
            .load_raw(self.f32t().into(), scratch, self.c(32))?
            .into_float_value();
        // The scratch is reused by the next reduction: wait until every thread has read it.
        self.barrier()?;
        Ok(result)
    }

    /// Combines `v` across the 32 lanes of a warp with butterfly shuffles.
    pub fn warp_reduce(&self, v: FloatValue<'ctx>, op: Combine) -> Gen<FloatValue<'ctx>> {
        if self.target == Target::Host {
            return Ok(v);
        }
        let mut acc = v;
        for offset in [16, 8, 4, 2, 1] {
            let other = self.shfl_bfly(acc, offset)?;
            acc = self.combine(op, acc, other)?;
        }
        Ok(acc)
    }

    /// `a ∘ b`.
    pub fn combine(
        &self,
        op: Combine,
        a: FloatValue<'ctx>,
        b: FloatValue<'ctx>,
    ) -> Gen<FloatValue<'ctx>> {
        match op {
            Combine::Sum => self.fadd(a, b),
            Combine::Max => self.fmax(a, b),
            Combine::Min => self.fmin(a, b),
            Combine::Prod => self.fmul(a, b),
        }
    }

    /// The value of lane `lane ^ offset`.
    pub fn shfl_bfly(&self, v: FloatValue<'ctx>, offset: u64) -> Gen<FloatValue<'ctx>> {
        let i32t = self.cx.i32_type();
        Ok(self
            .call(
                "llvm.nvvm.shfl.sync.bfly.f32",
                self.f32t().into(),
                &[
                    i32t.const_int(0xffff_ffff, false).into(),
                    v.into(),
                    i32t.const_int(offset, false).into(),
                    i32t.const_int(0x1f, false).into(),
                ],
            )?
            .into_float_value())
    }

    // ---- control flow ---------------------------------------------------------------------

    /// `for (i = start; i < end; i += step) body(i)`.
    pub fn for_range(
        &mut self,
        start: IntValue<'ctx>,
        end: IntValue<'ctx>,
        step: IntValue<'ctx>,
        mut body: impl FnMut(&mut Self, IntValue<'ctx>) -> Gen<()>,
    ) -> Gen<()> {
        let pre = self.current_block();
        let head = self.cx.append_basic_block(self.func, "loop");
        let body_bb = self.cx.append_basic_block(self.func, "body");
        let exit = self.cx.append_basic_block(self.func, "exit");
        self.b.build_unconditional_branch(head)?;
        self.b.position_at_end(head);
        let phi = self.b.build_phi(self.i64t(), "i")?;
        phi.add_incoming(&[(&start, pre)]);
        let i = phi.as_basic_value().into_int_value();
        let more = self.icmp(IntPredicate::SLT, i, end)?;
        self.b.build_conditional_branch(more, body_bb, exit)?;
        self.b.position_at_end(body_bb);
        body(self, i)?;
        let next = self.add(i, step)?;
        let latch = self.current_block();
        self.b.build_unconditional_branch(head)?;
        phi.add_incoming(&[(&next, latch)]);
        self.b.position_at_end(exit);
        Ok(())
    }

    /// A loop carrying values: `for i in start..end step step { state = body(i, state) }`.
    pub fn fold_range(
        &mut self,
        start: IntValue<'ctx>,
        end: IntValue<'ctx>,
        step: IntValue<'ctx>,
        init: Vec<BasicValueEnum<'ctx>>,
        mut body: impl FnMut(
            &mut Self,
            IntValue<'ctx>,
            Vec<BasicValueEnum<'ctx>>,
        ) -> Gen<Vec<BasicValueEnum<'ctx>>>,
    ) -> Gen<Vec<BasicValueEnum<'ctx>>> {
        let pre = self.current_block();
        let head = self.cx.append_basic_block(self.func, "loop");
        let body_bb = self.cx.append_basic_block(self.func, "body");
        let exit = self.cx.append_basic_block(self.func, "exit");
        self.b.build_unconditional_branch(head)?;
        self.b.position_at_end(head);
        let phi = self.b.build_phi(self.i64t(), "i")?;
        phi.add_incoming(&[(&start, pre)]);
        let mut phis = Vec::new();
        for v in &init {
            let p = self.b.build_phi(v.get_type(), "acc")?;
            p.add_incoming(&[(v as &dyn BasicValue, pre)]);
            phis.push(p);
        }
        let i = phi.as_basic_value().into_int_value();
        let state: Vec<_> = phis.iter().map(|p| p.as_basic_value()).collect();
        let more = self.icmp(IntPredicate::SLT, i, end)?;
        self.b.build_conditional_branch(more, body_bb, exit)?;
        self.b.position_at_end(body_bb);
        let next_state = body(self, i, state.clone())?;
        let next = self.add(i, step)?;
        let latch = self.current_block();
        self.b.build_unconditional_branch(head)?;
        phi.add_incoming(&[(&next, latch)]);
        for (p, v) in phis.iter().zip(&next_state) {
            p.add_incoming(&[(v as &dyn BasicValue, latch)]);
        }
        self.b.position_at_end(exit);
        Ok(state)
    }

    /// `if cond { body }`.
    pub fn if_then(
        &mut self,
        cond: IntValue<'ctx>,
        body: impl FnOnce(&mut Self) -> Gen<()>,
    ) -> Gen<()> {
        let then = self.cx.append_basic_block(self.func, "then");
        let done = self.cx.append_basic_block(self.func, "endif");
        self.b.build_conditional_branch(cond, then, done)?;
        self.b.position_at_end(then);
        body(self)?;
        self.b.build_unconditional_branch(done)?;
        self.b.position_at_end(done);
        Ok(())
    }

    fn current_block(&self) -> inkwell::basic_block::BasicBlock<'ctx> {
        self.b.get_insert_block().expect("builder is positioned")
    }

    /// Grid-strided loop over `units` work units, one block at a time.
    pub fn for_each_block_unit(
        &mut self,
        units: IntValue<'ctx>,
        body: impl FnMut(&mut Self, IntValue<'ctx>) -> Gen<()>,
    ) -> Gen<()> {
        let start = self.ctaid()?;
        let step = self.nctaid()?;
        self.for_range(start, units, step, body)
    }

    /// Grid-strided loop over items `first..n`, one thread at a time.
    pub fn for_each_thread_item(
        &mut self,
        first: IntValue<'ctx>,
        n: IntValue<'ctx>,
        body: impl FnMut(&mut Self, IntValue<'ctx>) -> Gen<()>,
    ) -> Gen<()> {
        let ntid = self.ntid()?;
        let start = self.add(self.mul(self.ctaid()?, ntid)?, self.tid()?)?;
        let start = self.add(start, first)?;
        let step = self.mul(self.nctaid()?, ntid)?;
        self.for_range(start, n, step, body)
    }

    /// Block-strided loop over `n` items within one block's unit.
    pub fn for_each_block_item(
        &mut self,
        n: IntValue<'ctx>,
        body: impl FnMut(&mut Self, IntValue<'ctx>) -> Gen<()>,
    ) -> Gen<()> {
        let start = self.tid()?;
        let step = self.ntid()?;
        self.for_range(start, n, step, body)
    }
}

/// Sets the alignment of a load or store `access` to `bytes`.
fn aligned(access: Option<InstructionValue<'_>>, bytes: u32) -> Gen<()> {
    access
        .ok_or_else(|| KernelError::Llvm("a memory access is not an instruction".into()))?
        .set_alignment(bytes)
        .map_err(|e| KernelError::Llvm(e.to_string()))
}

/// A value being computed: floats in `f32`, integers and bools in `i64`.
#[derive(Clone, Copy, Debug)]
pub enum Val<'ctx> {
    /// A float.
    F(FloatValue<'ctx>),
    /// An integer or bool.
    I(IntValue<'ctx>),
}

impl<'ctx> Val<'ctx> {
    /// The float, converting an integer.
    pub fn float(self, cg: &Cg<'ctx>) -> Gen<FloatValue<'ctx>> {
        match self {
            Val::F(f) => Ok(f),
            Val::I(i) => cg.itof(i),
        }
    }

    /// As an LLVM value, for loop state and selects.
    pub fn basic(self) -> BasicValueEnum<'ctx> {
        match self {
            Val::F(f) => f.into(),
            Val::I(i) => i.into(),
        }
    }

    /// An LLVM value [`Val::basic`] made, back.
    pub fn of(v: BasicValueEnum<'ctx>) -> Val<'ctx> {
        match v {
            BasicValueEnum::FloatValue(f) => Val::F(f),
            other => Val::I(other.into_int_value()),
        }
    }
}

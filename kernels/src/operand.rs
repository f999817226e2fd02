//! A product's two operands as its kernel reads them: float values (through whatever prologue
//! the optimizer fused, values rounded to BF16/FP16 included), and quantized codes (stored, or
//! quantized in the kernel from float values) with their per-tensor, per-channel or per-block
//! scales and zero points.
//!
//! The quantized forms are the chains `passes/src/qfold.rs` folds into products:
//! `DequantizeLinear(codes, scale, zero)`, `DequantizeLinear(QuantizeLinear(x, s, z), s, z)`,
//! and FP4 codes with block scales (`DequantizeLinear(codes, DequantizeLinear(e4m3, t))` for
//! NVFP4). A kernel multiplies the codes, or their values with the scale set aside, and applies
//! the scales in its epilogue. Reference: the CPU executor running the same body node by node.

use crate::cg::{Cg, Gen};
use crate::expr::is_scalar_op;
use crate::narrow::{encode_minifloat, is_minifloat, value_table};
use crate::quant::{encode_int, encode_saturated, BlockScale, BlockTables, Codes, ScaleIndex};
use crate::reduce::Reader;
use crate::{resolve_axis, KernelError, Request, TensorSig};
use inkwell::values::{FloatValue, IntValue, PointerValue};
use inkwell::IntPredicate;
use sparkc_ir::formats::BlockFormat;
use sparkc_ir::op::Unary;
use sparkc_ir::{BodyNode, DType, Dim, Op, Operand as Arg};

/// What every element of an operand is once its scale is set aside, which decides the
/// tensor-core types that multiply it exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Any `f32` value.
    F32,
    /// Values exactly representable in BF16.
    Bf16,
    /// Values exactly representable in FP16.
    F16,
    /// 8-bit integer codes (minus a zero point): I8 when `signed`, else U8.
    Int8 {
        /// I8 rather than U8.
        signed: bool,
    },
    /// FP8 codes (E4M3FN or E5M2).
    Fp8(DType),
    /// FP4 E2M1 codes times an E4M3 block scale (`nv`, NVFP4) or an E8M0 one (MXFP4), in
    /// blocks of `block` along k.
    Fp4 {
        /// E4M3 block scales rather than E8M0.
        nv: bool,
        /// Elements per block scale.
        block: i64,
    },
    /// Anything else (integers, `f64`): CUDA cores only.
    Wide,
}

/// A tensor-core input type, for [`Class::exact_in`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Staged {
    /// BF16.
    Bf16,
    /// FP16.
    F16,
    /// TF32 (FP32 storage, 10 mantissa bits).
    Tf32,
}

impl Class {
    /// Whether every unscaled element converts to `staged` without rounding.
    pub fn exact_in(self, staged: Staged) -> bool {
        !matches!(
            (self, staged),
            (Class::F32 | Class::Wide, _)
                | (Class::Bf16, Staged::F16)
                | (Class::F16, Staged::Bf16)
                | (Class::Fp4 { nv: false, .. }, Staged::F16)
        )
    }

    /// The class of codes of `dtype` scaled per tensor or per channel.
    fn of_codes(dtype: DType) -> Class {
        match dtype {
            DType::I8 => Class::Int8 { signed: true },
            DType::U8 => Class::Int8 { signed: false },
            DType::F8E4M3FN | DType::F8E5M2 => Class::Fp8(dtype),
            d if d.is_float() => Class::F32,
            _ => Class::Wide,
        }
    }
}

/// A product body split at its anchor.
pub(crate) struct Split {
    /// The anchor's index in the body.
    pub(crate) anchor: usize,
    /// For each of the anchor's first two operands, a body computing it: its last node is the
    /// operand (`Identity(input)` when the anchor reads an input as it is).
    pub(crate) chains: [Vec<BodyNode>; 2],
    /// The epilogue, reading the anchor's value as pseudo-input `inputs.len()`.
    pub(crate) epilogue: Vec<BodyNode>,
}

/// The nodes body node `j` depends on, renumbered in order; the last one is `j`.
fn closure(body: &[BodyNode], j: usize) -> Vec<BodyNode> {
    let mut needed = vec![false; j + 1];
    needed[j] = true;
    for k in (0..=j).rev() {
        if needed[k] {
            for arg in body[k].args.iter().flatten() {
                if let Arg::Node(d) = arg {
                    needed[*d] = true;
                }
            }
        }
    }
    let mut renumber = vec![0; j + 1];
    let mut out = Vec::new();
    for k in 0..=j {
        if needed[k] {
            renumber[k] = out.len();
            let args = body[k]
                .args
                .iter()
                .map(|a| match a {
                    Some(Arg::Node(d)) => Some(Arg::Node(renumber[*d])),
                    other => *other,
                })
                .collect();
            out.push(BodyNode {
                op: body[k].op.clone(),
                args,
            });
        }
    }
    out
}

/// The body computing operand `arg` of a node.
fn chain_of(body: &[BodyNode], arg: Option<Arg>) -> Gen<Vec<BodyNode>> {
    match arg {
        Some(Arg::Input(i)) => Ok(vec![BodyNode {
            op: Op::Unary(Unary::Identity),
            args: vec![Some(Arg::Input(i))],
        }]),
        Some(Arg::Node(j)) => Ok(closure(body, j)),
        None => Err(KernelError::Unsupported(
            "a product without an operand".into(),
        )),
    }
}

/// Splits a product's body at its anchor: the two operand chains and the epilogue.
pub(crate) fn split(body: &[BodyNode], inputs: usize, is_anchor: fn(&Op) -> bool) -> Gen<Split> {
    let a = body
        .iter()
        .position(|n| is_anchor(&n.op))
        .ok_or_else(|| KernelError::Unsupported("no product in the body".into()))?;
    let anchor = &body[a];
    if anchor
        .args
        .iter()
        .skip(2)
        .flatten()
        .any(|arg| matches!(arg, Arg::Node(_)))
    {
        return Err(KernelError::Unsupported(
            "a product's bias must be an input of the fused node".into(),
        ));
    }
    let chains = [
        chain_of(body, anchor.args.first().copied().flatten())?,
        chain_of(body, anchor.args.get(1).copied().flatten())?,
    ];
    for node in chains.iter().flatten() {
        let quantizing = matches!(
            node.op,
            Op::QuantizeLinear { .. } | Op::DequantizeLinear { .. } | Op::RoundToBlocks { .. }
        );
        if !quantizing && !is_scalar_op(&node.op) {
            return Err(KernelError::Unsupported(format!(
                "{} cannot be fused before a product",
                node.op.name()
            )));
        }
    }
    if let Some(bad) = body[a + 1..].iter().find(|n| !is_scalar_op(&n.op)) {
        return Err(KernelError::Unsupported(format!(
            "{} cannot be fused after a product",
            bad.op.name()
        )));
    }
    let epilogue = crate::reduce::epilogue(body, a, inputs)?;
    Ok(Split {
        anchor: a,
        chains,
        epilogue,
    })
}

/// The shape of a chain's value: elementwise nodes broadcast, quantization keeps its input's.
fn chain_shape(req: &Request, chain: &[BodyNode]) -> Gen<Vec<Dim>> {
    let mut shapes: Vec<Vec<Dim>> = Vec::with_capacity(chain.len());
    for node in chain {
        let of = |arg: &Arg| -> Gen<Vec<Dim>> {
            match arg {
                Arg::Input(i) => Ok(req.input(*i)?.shape.clone()),
                Arg::Node(k) => Ok(shapes[*k].clone()),
            }
        };
        let shape = match node.op {
            Op::QuantizeLinear { .. } | Op::DequantizeLinear { .. } | Op::RoundToBlocks { .. } => {
                match node.args.first() {
                    Some(Some(arg)) => of(arg)?,
                    _ => return Err(KernelError::Unsupported("quantizing nothing".into())),
                }
            }
            _ => {
                let operands: Vec<sparkc_ir::Shape> = node
                    .args
                    .iter()
                    .flatten()
                    .map(|arg| Ok(Some(of(arg)?)))
                    .collect::<Gen<_>>()?;
                let refs: Vec<&sparkc_ir::Shape> = operands.iter().collect();
                sparkc_ir::infer::broadcast_shapes(&refs)
                    .map_err(KernelError::Unsupported)?
                    .unwrap_or_default()
            }
        };
        shapes.push(shape);
    }
    shapes
        .pop()
        .ok_or_else(|| KernelError::Unsupported("an empty operand".into()))
}

/// How an operand's elements are produced.
enum Source<'ctx> {
    /// Float values computed by the prologue (or read as they are).
    Values(Reader),
    /// Codes stored in an input buffer.
    Stored(Codes<'ctx>),
    /// Float values rounded block by block to FP4 in the kernel, as `RoundToBlocks` does.
    Rounded {
        /// The float values.
        reader: Reader,
        /// The code tables and block math of the format.
        tables: BlockTables<'ctx>,
        /// Elements per block.
        block: i64,
    },
    /// Codes the kernel computes from float values, rounding and saturating as
    /// `QuantizeLinear` does.
    Computed {
        /// The float values.
        reader: Reader,
        /// The scale input's slot.
        scale: usize,
        /// `QuantizeLinear`'s saturation of out-of-range FP8 values.
        saturate: bool,
        /// The code → value table of a minifloat code type.
        table: Option<PointerValue<'ctx>>,
    },
}

/// How an operand's scale applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleKind {
    /// No scale.
    None,
    /// One for the whole tensor.
    Tensor,
    /// One per index of an axis (the product's output channels).
    Channel(usize),
    /// One per block along an axis (the product's reduced axis).
    Blocks(usize),
}

/// One operand of a product, ready to be read element by element.
pub(crate) struct Factor<'ctx> {
    source: Source<'ctx>,
    /// What its unscaled elements are.
    pub(crate) class: Class,
    /// Its shape.
    pub(crate) shape: Vec<Dim>,
    /// The codes' type (`F32` for float values).
    pub(crate) codes: DType,
    /// An input slot whose buffer holds exactly what the kernel stages, and its dtype.
    pub(crate) plain: Option<(usize, DType)>,
    /// How the scale applies.
    pub(crate) scale_kind: ScaleKind,
    scale: Option<usize>,
    zero: Option<Codes<'ctx>>,
    blocks: Option<(Codes<'ctx>, ScaleIndex)>,
    tensor_scale: Option<usize>,
}

fn input_of(arg: Option<&Option<Arg>>) -> Option<usize> {
    match arg {
        Some(Some(Arg::Input(i))) => Some(*i),
        _ => None,
    }
}

fn is_scalar(t: &TensorSig) -> bool {
    t.shape.iter().all(|d| d.as_const() == Some(1))
}

impl<'ctx> Factor<'ctx> {
    /// Reads the operand computed by `chain` (from [`split`]).
    pub(crate) fn new(cg: &mut Cg<'ctx>, req: &Request, chain: &[BodyNode]) -> Gen<Factor<'ctx>> {
        let shape = chain_shape(req, chain)?;
        let last = chain
            .last()
            .ok_or_else(|| KernelError::Unsupported("an empty operand".into()))?;
        if let Op::RoundToBlocks { format } = last.op {
            return Factor::rounded(cg, req, chain, shape, format);
        }
        let Op::DequantizeLinear {
            axis,
            block_size,
            output_dtype,
        } = &last.op
        else {
            return Factor::values(req, chain, shape);
        };
        if !matches!(output_dtype, None | Some(DType::F32)) {
            return Err(KernelError::Unsupported(
                "a product of a DequantizeLinear to a type other than f32".into(),
            ));
        }
        let scale_arg = last.args.get(1).copied().flatten();
        let zero_arg = last.args.get(2).copied().flatten();
        let (source, codes) = match last.args.first().copied().flatten() {
            Some(Arg::Input(i)) => {
                let dtype = req.input(i)?.dtype;
                (
                    Source::Stored(Codes::new(cg, dtype, req.input_param(i))),
                    dtype,
                )
            }
            Some(Arg::Node(q)) => {
                let Op::QuantizeLinear {
                    block_size: 0,
                    output_dtype,
                    saturate,
                    ..
                } = &chain[q].op
                else {
                    return Err(KernelError::Unsupported(
                        "a product's codes must be an input or a per-tensor QuantizeLinear".into(),
                    ));
                };
                let same_scale = chain[q].args.get(1).copied().flatten() == scale_arg;
                let same_zero = chain[q].args.get(2).copied().flatten() == zero_arg;
                if !same_scale || !same_zero {
                    return Err(KernelError::Unsupported(
                        "a QuantizeLinear/DequantizeLinear pair with different scales".into(),
                    ));
                }
                let scale = input_of(chain[q].args.get(1))
                    .filter(|&s| req.input(s).is_ok_and(is_scalar))
                    .ok_or_else(|| {
                        KernelError::Unsupported(
                            "an activation quantized in a product needs one scale".into(),
                        )
                    })?;
                let zero_dtype = match zero_arg {
                    Some(Arg::Input(z)) => Some(req.input(z)?.dtype),
                    _ => None,
                };
                let dtype = output_dtype.or(zero_dtype).unwrap_or(DType::U8);
                let x = chain_of(chain, chain[q].args.first().copied().flatten())?;
                let reader = Reader::new(req, &x, &chain_shape(req, &x)?)?;
                let table = is_minifloat(dtype).then(|| value_table(cg, dtype));
                (
                    Source::Computed {
                        reader,
                        scale,
                        saturate: *saturate,
                        table,
                    },
                    dtype,
                )
            }
            None => return Err(KernelError::Unsupported("dequantizing nothing".into())),
        };
        let zero = match zero_arg {
            None => None,
            Some(Arg::Input(z)) if is_scalar(req.input(z)?) => {
                Some(Codes::new(cg, req.input(z)?.dtype, req.input_param(z)))
            }
            Some(_) => {
                return Err(KernelError::Unsupported(
                    "a product's zero point must be one value".into(),
                ))
            }
        };
        let codes_sig = TensorSig {
            dtype: codes,
            shape: shape.clone(),
        };
        let mut out = Factor {
            source,
            class: Class::of_codes(codes),
            shape: shape.clone(),
            codes,
            plain: None,
            scale_kind: ScaleKind::None,
            scale: None,
            zero,
            blocks: None,
            tensor_scale: None,
        };
        if let Source::Stored(_) = out.source {
            if codes.bits() == 8 {
                out.plain = input_of(last.args.first()).map(|i| (i, codes));
            }
        }
        if *block_size > 0 {
            let axis = resolve_axis(*axis, shape.len())?;
            let (scales, tensor_scale) = match scale_arg {
                Some(Arg::Input(s)) => (s, None),
                Some(Arg::Node(d)) => match (&chain[d].op, chain[d].args.as_slice()) {
                    (
                        Op::DequantizeLinear { block_size: 0, .. },
                        [Some(Arg::Input(s)), Some(Arg::Input(t))],
                    ) if is_scalar(req.input(*t)?) => (*s, Some(*t)),
                    _ => {
                        return Err(KernelError::Unsupported(
                            "block scales must be stored, or stored codes times one scale".into(),
                        ))
                    }
                },
                None => {
                    return Err(KernelError::Unsupported(
                        "dequantizing without scales".into(),
                    ))
                }
            };
            let scale_sig = req.input(scales)?.clone();
            let index = ScaleIndex::new(&codes_sig, &scale_sig, axis as i64, *block_size)?;
            out.class = match (codes, scale_sig.dtype) {
                (DType::F4E2M1, DType::F8E4M3FN) => Class::Fp4 {
                    nv: true,
                    block: *block_size,
                },
                (DType::F4E2M1, DType::F8E8M0) => Class::Fp4 {
                    nv: false,
                    block: *block_size,
                },
                _ => Class::F32,
            };
            if out.zero.is_some() {
                out.class = Class::F32;
            }
            // FP4 codes stage as they are stored for the block-scaled tensor cores.
            out.plain = match (&out.source, last.args.first().copied().flatten()) {
                (Source::Stored(_), Some(Arg::Input(i))) if codes == DType::F4E2M1 => {
                    Some((i, codes))
                }
                _ => None,
            };
            out.scale_kind = ScaleKind::Blocks(axis);
            out.blocks = Some((
                Codes::new(cg, scale_sig.dtype, req.input_param(scales)),
                index,
            ));
            out.tensor_scale = tensor_scale;
            return Ok(out);
        }
        let scale = input_of(last.args.get(1))
            .ok_or_else(|| KernelError::Unsupported("a computed scale".into()))?;
        let scale_sig = req.input(scale)?;
        out.scale = Some(scale);
        out.scale_kind = if is_scalar(scale_sig) {
            ScaleKind::Tensor
        } else if scale_sig.shape.len() == 1 {
            ScaleKind::Channel(resolve_axis(*axis, shape.len())?)
        } else {
            return Err(KernelError::Unsupported(
                "a product's scale must be one value or one per channel".into(),
            ));
        };
        if out.zero.is_some() && matches!(out.class, Class::Fp8(_)) {
            out.class = Class::F32;
        }
        Ok(out)
    }

    /// Float values rounded block by block to FP4 (`RoundToBlocks(x, tensor_scale?)`).
    fn rounded(
        cg: &mut Cg<'ctx>,
        req: &Request,
        chain: &[BodyNode],
        shape: Vec<Dim>,
        format: BlockFormat,
    ) -> Gen<Factor<'ctx>> {
        let last = &chain[chain.len() - 1];
        let x = chain_of(chain, last.args.first().copied().flatten())?;
        let reader = Reader::new(req, &x, &chain_shape(req, &x)?)?;
        let tensor_scale = match last.args.get(1).copied().flatten() {
            Some(Arg::Input(t)) if is_scalar(req.input(t)?) => Some(t),
            Some(_) => {
                return Err(KernelError::Unsupported(
                    "a block format's tensor scale must be one stored value".into(),
                ))
            }
            None => None,
        };
        let block = format.block_size() as i64;
        Ok(Factor {
            source: Source::Rounded {
                reader,
                tables: BlockTables::new(cg, format),
                block,
            },
            class: Class::Fp4 {
                nv: format == BlockFormat::Nvfp4,
                block,
            },
            scale_kind: ScaleKind::Blocks(shape.len().saturating_sub(1)),
            shape,
            codes: DType::F4E2M1,
            plain: None,
            scale: None,
            zero: None,
            blocks: None,
            tensor_scale,
        })
    }

    /// The tensor scale of a rounded operand (1 when it has none).
    fn tensor_scale_value(&self, cg: &Cg<'ctx>, req: &Request) -> Gen<FloatValue<'ctx>> {
        match self.tensor_scale {
            Some(t) => cg
                .load(req.input(t)?.dtype, cg.buffer(req.input_param(t)), cg.c(0))?
                .float(cg),
            None => Ok(cg.f(1.0)),
        }
    }

    /// The block scale of the rounded block starting at flat index `start`, holding `count`
    /// elements.
    fn rounded_scale(
        &self,
        cg: &Cg<'ctx>,
        req: &Request,
        (reader, tables, block): (&Reader, &BlockTables<'ctx>, i64),
        start: IntValue<'ctx>,
        count: IntValue<'ctx>,
    ) -> Gen<BlockScale<'ctx>> {
        let mut amax = cg.f(0.0);
        for e in 0..block {
            let inside = cg.icmp(IntPredicate::SLT, cg.c(e), count)?;
            let at = cg.add(start, cg.imin(cg.c(e), cg.sub(count, cg.c(1))?)?)?;
            let v = reader.eval(cg, req, at, None)?.float(cg)?;
            let magnitude = cg.fsel(inside, cg.fcall1("llvm.fabs.f32", v)?, cg.f(0.0))?;
            amax = cg.fcall2("llvm.maxnum.f32", amax, magnitude)?;
        }
        tables.scale(cg, amax, self.tensor_scale_value(cg, req)?)
    }

    /// The first index and the length of the block holding flat index `index` of a rounded
    /// operand (blocks run along the last axis; the last one may be short).
    fn block_of(
        &self,
        cg: &Cg<'ctx>,
        block: i64,
        index: IntValue<'ctx>,
    ) -> Gen<(IntValue<'ctx>, IntValue<'ctx>)> {
        let len = match self.shape.last() {
            Some(d) => cg.dim(d)?,
            None => cg.c(1),
        };
        let within = cg.rem(cg.rem(index, len)?, cg.c(block))?;
        let start = cg.sub(index, within)?;
        let from_row_start = cg.rem(start, len)?;
        Ok((start, cg.imin(cg.sub(len, from_row_start)?, cg.c(block))?))
    }

    /// The FP4 codes of 32 consecutive elements along k from flat index `first` (`valid` of
    /// them inside the operand; the rest are code 0), and the scale codes of the blocks they
    /// make up (two NVFP4 blocks or one MXFP4 block). For the block-scaled tensor cores.
    pub(crate) fn fp4_chunk(
        &self,
        cg: &Cg<'ctx>,
        req: &Request,
        first: IntValue<'ctx>,
        valid: IntValue<'ctx>,
    ) -> Gen<(Vec<IntValue<'ctx>>, Vec<IntValue<'ctx>>)> {
        let block = match self.class {
            Class::Fp4 { block, .. } => block,
            _ => return Err(KernelError::Unsupported("not an FP4 operand".into())),
        };
        let mut codes = Vec::with_capacity(32);
        let mut scales = Vec::new();
        for b in 0..32 / block {
            let start = cg.add(first, cg.c(b * block))?;
            let count = cg.imax(
                cg.imin(cg.sub(valid, cg.c(b * block))?, cg.c(block))?,
                cg.c(0),
            )?;
            let any = cg.icmp(IntPredicate::SGT, count, cg.c(0))?;
            let element = |cg: &Cg<'ctx>, e: i64| -> Gen<(IntValue<'ctx>, IntValue<'ctx>)> {
                let inside = cg.icmp(IntPredicate::SLT, cg.c(e), count)?;
                let at = cg.add(
                    start,
                    cg.imin(cg.c(e), cg.imax(cg.sub(count, cg.c(1))?, cg.c(0))?)?,
                )?;
                Ok((inside, at))
            };
            match &self.source {
                Source::Rounded { reader, tables, .. } => {
                    let scale =
                        self.rounded_scale(cg, req, (reader, tables, block), start, count)?;
                    scales.push(cg.select(any, scale.code, cg.c(0))?.into_int_value());
                    for e in 0..block {
                        let (inside, at) = element(cg, e)?;
                        let v = reader.eval(cg, req, at, None)?.float(cg)?;
                        let code = tables.code(cg, v, &scale)?;
                        codes.push(cg.select(inside, code, cg.c(0))?.into_int_value());
                    }
                }
                Source::Stored(stored) => {
                    let (scale_codes, index) = self.blocks.as_ref().ok_or_else(|| {
                        KernelError::Unsupported("FP4 codes without block scales".into())
                    })?;
                    let code = scale_codes.code(cg, index.at(cg, element(cg, 0)?.1)?)?;
                    scales.push(cg.select(any, code, cg.c(0))?.into_int_value());
                    for e in 0..block {
                        let (inside, at) = element(cg, e)?;
                        let code = stored.code(cg, at)?;
                        codes.push(cg.select(inside, code, cg.c(0))?.into_int_value());
                    }
                }
                _ => return Err(KernelError::Unsupported("not an FP4 operand".into())),
            }
        }
        Ok((codes, scales))
    }

    /// Float values, possibly rounded to BF16/FP16 by a `Cast` pair.
    fn values(req: &Request, chain: &[BodyNode], shape: Vec<Dim>) -> Gen<Factor<'ctx>> {
        let last = &chain[chain.len() - 1];
        let narrow_class = |d: DType| match d {
            DType::BF16 => Some(Class::Bf16),
            DType::F16 => Some(Class::F16),
            _ => None,
        };
        let (class, plain) = match (&last.op, last.args.first().copied().flatten()) {
            (Op::Unary(Unary::Identity), Some(Arg::Input(i))) => {
                let dtype = req.input(i)?.dtype;
                match dtype {
                    DType::F32 => (Class::F32, Some((i, dtype))),
                    d => match narrow_class(d) {
                        Some(c) => (c, Some((i, d))),
                        None => (Class::Wide, None),
                    },
                }
            }
            (Op::Cast { to: DType::F32, .. }, Some(Arg::Input(i))) => {
                let dtype = req.input(i)?.dtype;
                match narrow_class(dtype) {
                    Some(c) => (c, Some((i, dtype))),
                    None => (Class::F32, None),
                }
            }
            (Op::Cast { to: DType::F32, .. }, Some(Arg::Node(j))) => match &chain[j].op {
                Op::Cast { to, .. } => (narrow_class(*to).unwrap_or(Class::F32), None),
                _ => (Class::F32, None),
            },
            _ => (Class::F32, None),
        };
        Ok(Factor {
            source: Source::Values(Reader::new(req, chain, &shape)?),
            class,
            shape,
            codes: DType::F32,
            plain,
            scale_kind: ScaleKind::None,
            scale: None,
            zero: None,
            blocks: None,
            tensor_scale: None,
        })
    }

    /// True when the operand's codes have a zero point.
    pub(crate) fn has_zero(&self) -> bool {
        self.zero.is_some()
    }

    /// The zero point as a signed integer (0 without one).
    pub(crate) fn zero_code(&self, cg: &Cg<'ctx>) -> Gen<IntValue<'ctx>> {
        match &self.zero {
            None => Ok(cg.c(0)),
            Some(z) => signed(cg, z.dtype(), z.code(cg, cg.c(0))?),
        }
    }

    fn zero_value(&self, cg: &Cg<'ctx>) -> Gen<Option<FloatValue<'ctx>>> {
        match &self.zero {
            None => Ok(None),
            Some(z) => Ok(Some(z.read(cg, cg.c(0))?)),
        }
    }

    /// The code of a computed operand's element `index`, as i64 in `0..256`.
    fn computed_code(
        &self,
        cg: &Cg<'ctx>,
        req: &Request,
        reader: &Reader,
        scale: usize,
        saturate: bool,
        index: IntValue<'ctx>,
    ) -> Gen<IntValue<'ctx>> {
        let x = reader.eval(cg, req, index, None)?.float(cg)?;
        let s = cg
            .load(
                req.input(scale)?.dtype,
                cg.buffer(req.input_param(scale)),
                cg.c(0),
            )?
            .float(cg)?;
        let q = cg.fdiv(x, s)?;
        if is_minifloat(self.codes) {
            match self.zero_value(cg)? {
                Some(z) => encode_minifloat(cg, self.codes, cg.fadd(q, z)?, saturate),
                None if saturate => encode_saturated(cg, self.codes, q),
                None => encode_minifloat(cg, self.codes, q, false),
            }
        } else {
            encode_int(cg, self.codes, q, self.zero_value(cg)?)
        }
    }

    /// The 8-bit code of element `index` (for tensor cores that multiply codes).
    pub(crate) fn code(
        &self,
        cg: &Cg<'ctx>,
        req: &Request,
        index: IntValue<'ctx>,
    ) -> Gen<IntValue<'ctx>> {
        match &self.source {
            Source::Stored(codes) => codes.code(cg, index),
            Source::Computed {
                reader,
                scale,
                saturate,
                ..
            } => self.computed_code(cg, req, reader, *scale, *saturate, index),
            Source::Values(_) | Source::Rounded { .. } => Err(KernelError::Unsupported(
                "these values have no 8-bit codes".into(),
            )),
        }
    }

    /// The code every element outside the operand reads as: the zero point.
    pub(crate) fn pad_code(&self, cg: &Cg<'ctx>) -> Gen<IntValue<'ctx>> {
        match &self.zero {
            None => Ok(cg.c(0)),
            Some(z) => z.code(cg, cg.c(0)),
        }
    }

    /// Element `index` with its scale set aside: the value itself, or its code minus the zero
    /// point (times its block scale).
    pub(crate) fn value(
        &self,
        cg: &Cg<'ctx>,
        req: &Request,
        index: IntValue<'ctx>,
    ) -> Gen<FloatValue<'ctx>> {
        let v = match &self.source {
            Source::Values(reader) => return reader.eval(cg, req, index, None)?.float(cg),
            Source::Rounded {
                reader,
                tables,
                block,
            } => {
                let (start, count) = self.block_of(cg, *block, index)?;
                let scale = self.rounded_scale(cg, req, (reader, tables, *block), start, count)?;
                let x = reader.eval(cg, req, index, None)?.float(cg)?;
                let code = tables.code(cg, x, &scale)?;
                return cg.fmul(tables.e2m1(cg, code)?, scale.own);
            }
            Source::Stored(codes) => codes.read(cg, index)?,
            Source::Computed {
                reader,
                scale,
                saturate,
                table,
            } => {
                let code = self.computed_code(cg, req, reader, *scale, *saturate, index)?;
                match table {
                    Some(t) => cg.load_raw(cg.f32t().into(), *t, code)?.into_float_value(),
                    None => cg.itof(signed(cg, self.codes, code)?)?,
                }
            }
        };
        let v = match self.zero_value(cg)? {
            Some(z) => cg.fsub(v, z)?,
            None => v,
        };
        match &self.blocks {
            Some((scales, index_of)) => cg.fmul(v, scales.read(cg, index_of.at(cg, index)?)?),
            None => Ok(v),
        }
    }

    /// The factor output channel `channel` is multiplied by, when there is one.
    pub(crate) fn scale(
        &self,
        cg: &Cg<'ctx>,
        req: &Request,
        channel: IntValue<'ctx>,
    ) -> Gen<Option<FloatValue<'ctx>>> {
        let load = |slot: usize, at: IntValue<'ctx>| -> Gen<FloatValue<'ctx>> {
            cg.load(req.input(slot)?.dtype, cg.buffer(req.input_param(slot)), at)?
                .float(cg)
        };
        let mut out = match (self.scale, self.scale_kind) {
            (Some(s), ScaleKind::Channel(_)) => Some(load(s, channel)?),
            (Some(s), _) => Some(load(s, cg.c(0))?),
            (None, _) => None,
        };
        if let Some(t) = self.tensor_scale {
            let t = load(t, cg.c(0))?;
            out = Some(match out {
                Some(s) => cg.fmul(s, t)?,
                None => t,
            });
        }
        Ok(out)
    }
}

/// An integer code (i64 holding its low byte) as its signed value when `dtype` is signed.
fn signed<'ctx>(cg: &Cg<'ctx>, dtype: DType, code: IntValue<'ctx>) -> Gen<IntValue<'ctx>> {
    let bits = dtype.bits() as i64;
    if matches!(dtype, DType::I4 | DType::I8 | DType::I16 | DType::I32) {
        let wide = cg.b.build_left_shift(code, cg.c(64 - bits), "")?;
        Ok(cg.b.build_right_shift(wide, cg.c(64 - bits), true, "")?)
    } else {
        Ok(code)
    }
}

/// `a × b` when both are present, whichever one is otherwise.
pub(crate) fn combine<'ctx>(
    cg: &Cg<'ctx>,
    a: Option<FloatValue<'ctx>>,
    b: Option<FloatValue<'ctx>>,
) -> Gen<Option<FloatValue<'ctx>>> {
    Ok(match (a, b) {
        (Some(a), Some(b)) => Some(cg.fmul(a, b)?),
        (a, b) => a.or(b),
    })
}

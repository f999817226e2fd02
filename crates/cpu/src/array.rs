//! Runtime tensors: a shape and typed element storage, with conversions between element types.

use half::{bf16, f16};
use sparkc_ir::formats as minifloat;
use sparkc_ir::{DType, Tensor};
use std::fmt::Debug;

/// Element storage, one `Vec` per element type.
///
/// The 8-bit float types and the packed 4- and 2-bit types are kept one element per byte (the
/// element's bit pattern in the low bits) so every op can index them; they are packed again when
/// converted back to a [`Tensor`].
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// 32-bit float.
    F32(Vec<f32>),
    /// 64-bit float.
    F64(Vec<f64>),
    /// 16-bit IEEE float.
    F16(Vec<f16>),
    /// bfloat16.
    BF16(Vec<bf16>),
    /// 8-bit signed integer.
    I8(Vec<i8>),
    /// 16-bit signed integer.
    I16(Vec<i16>),
    /// 32-bit signed integer.
    I32(Vec<i32>),
    /// 64-bit signed integer.
    I64(Vec<i64>),
    /// 8-bit unsigned integer.
    U8(Vec<u8>),
    /// 16-bit unsigned integer.
    U16(Vec<u16>),
    /// 32-bit unsigned integer.
    U32(Vec<u32>),
    /// 64-bit unsigned integer.
    U64(Vec<u64>),
    /// Boolean.
    Bool(Vec<bool>),
    /// FP8, FP4, INT4, UINT4, INT2 and UINT2: the bit pattern of each element in one byte.
    Bits(DType, Vec<u8>),
}

/// Runs `$body` with `$v` bound to the element vector, whatever its type.
#[macro_export]
macro_rules! with_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::Data::F32($v) => $body,
            $crate::Data::F64($v) => $body,
            $crate::Data::F16($v) => $body,
            $crate::Data::BF16($v) => $body,
            $crate::Data::I8($v) => $body,
            $crate::Data::I16($v) => $body,
            $crate::Data::I32($v) => $body,
            $crate::Data::I64($v) => $body,
            $crate::Data::U8($v) => $body,
            $crate::Data::U16($v) => $body,
            $crate::Data::U32($v) => $body,
            $crate::Data::U64($v) => $body,
            $crate::Data::Bool($v) => $body,
            $crate::Data::Bits(_, $v) => $body,
        }
    };
}

/// Maps the element vector of a `&Data` to a new `Data` of the same type.
#[macro_export]
macro_rules! map_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::Data::F32($v) => $crate::Data::F32($body),
            $crate::Data::F64($v) => $crate::Data::F64($body),
            $crate::Data::F16($v) => $crate::Data::F16($body),
            $crate::Data::BF16($v) => $crate::Data::BF16($body),
            $crate::Data::I8($v) => $crate::Data::I8($body),
            $crate::Data::I16($v) => $crate::Data::I16($body),
            $crate::Data::I32($v) => $crate::Data::I32($body),
            $crate::Data::I64($v) => $crate::Data::I64($body),
            $crate::Data::U8($v) => $crate::Data::U8($body),
            $crate::Data::U16($v) => $crate::Data::U16($body),
            $crate::Data::U32($v) => $crate::Data::U32($body),
            $crate::Data::U64($v) => $crate::Data::U64($body),
            $crate::Data::Bool($v) => $crate::Data::Bool($body),
            $crate::Data::Bits(dtype, $v) => $crate::Data::Bits(*dtype, $body),
        }
    };
}

/// Runs `$body` with `$v` bound to the element vector of the plain numeric types (not bool or bits).
#[macro_export]
macro_rules! map_numeric {
    ($data:expr, $v:ident => $body:expr, $other:ident => $fallback:expr) => {
        match $data {
            $crate::Data::F32($v) => $crate::Data::F32($body),
            $crate::Data::F64($v) => $crate::Data::F64($body),
            $crate::Data::F16($v) => $crate::Data::F16($body),
            $crate::Data::BF16($v) => $crate::Data::BF16($body),
            $crate::Data::I8($v) => $crate::Data::I8($body),
            $crate::Data::I16($v) => $crate::Data::I16($body),
            $crate::Data::I32($v) => $crate::Data::I32($body),
            $crate::Data::I64($v) => $crate::Data::I64($body),
            $crate::Data::U8($v) => $crate::Data::U8($body),
            $crate::Data::U16($v) => $crate::Data::U16($body),
            $crate::Data::U32($v) => $crate::Data::U32($body),
            $crate::Data::U64($v) => $crate::Data::U64($body),
            $other => $fallback,
        }
    };
}

/// An element type the executor computes with: convertible to and from `f64` and `i64`.
pub trait Elem: Copy + Default + Send + Sync + PartialOrd + Debug + 'static {
    /// The value as f64.
    fn to_f64(self) -> f64;
    /// numpy `astype` from f64: floats round to nearest, integers truncate and wrap.
    fn from_f64(v: f64) -> Self;
    /// The value as i64 (floats truncate).
    fn to_i64(self) -> i64;
    /// From i64, wrapping for narrower integers.
    fn from_i64(v: i64) -> Self;
}

macro_rules! int_elem {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            fn to_f64(self) -> f64 { self as f64 }
            fn from_f64(v: f64) -> Self {
                if v.is_nan() { 0 as $t } else if v.abs() < 9.2e18 { (v as i64) as $t } else { v as $t }
            }
            fn to_i64(self) -> i64 { self as i64 }
            fn from_i64(v: i64) -> Self { v as $t }
        }
    )*};
}
int_elem!(i8, i16, i32, i64, u8, u16, u32, u64);

impl Elem for f32 {
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_i64(self) -> i64 {
        self as i64
    }
    fn from_i64(v: i64) -> Self {
        v as f32
    }
}

impl Elem for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_i64(self) -> i64 {
        self as i64
    }
    fn from_i64(v: i64) -> Self {
        v as f64
    }
}

macro_rules! half_elem {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            fn to_f64(self) -> f64 {
                <$t>::to_f64(self)
            }
            fn from_f64(v: f64) -> Self {
                <$t>::from_f64(v)
            }
            fn to_i64(self) -> i64 {
                self.to_f32() as i64
            }
            fn from_i64(v: i64) -> Self {
                <$t>::from_f64(v as f64)
            }
        }
    )*};
}
half_elem!(f16, bf16);

impl Elem for bool {
    fn to_f64(self) -> f64 {
        f64::from(u8::from(self))
    }
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
    fn to_i64(self) -> i64 {
        i64::from(self)
    }
    fn from_i64(v: i64) -> Self {
        v != 0
    }
}

/// A tensor at run time: a shape and its elements in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    /// Dimensions; empty for a scalar.
    pub shape: Vec<usize>,
    /// Elements.
    pub data: Data,
}

impl Data {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Data::F32(_) => DType::F32,
            Data::F64(_) => DType::F64,
            Data::F16(_) => DType::F16,
            Data::BF16(_) => DType::BF16,
            Data::I8(_) => DType::I8,
            Data::I16(_) => DType::I16,
            Data::I32(_) => DType::I32,
            Data::I64(_) => DType::I64,
            Data::U8(_) => DType::U8,
            Data::U16(_) => DType::U16,
            Data::U32(_) => DType::U32,
            Data::U64(_) => DType::U64,
            Data::Bool(_) => DType::Bool,
            Data::Bits(dtype, _) => *dtype,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        with_data!(self, v => v.len())
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `len` zero (or false) elements of `dtype`.
    pub fn zeros(dtype: DType, len: usize) -> Data {
        match dtype {
            DType::F32 => Data::F32(vec![0.0; len]),
            DType::F64 => Data::F64(vec![0.0; len]),
            DType::F16 => Data::F16(vec![f16::ZERO; len]),
            DType::BF16 => Data::BF16(vec![bf16::ZERO; len]),
            DType::I8 => Data::I8(vec![0; len]),
            DType::I16 => Data::I16(vec![0; len]),
            DType::I32 => Data::I32(vec![0; len]),
            DType::I64 => Data::I64(vec![0; len]),
            DType::U8 => Data::U8(vec![0; len]),
            DType::U16 => Data::U16(vec![0; len]),
            DType::U32 => Data::U32(vec![0; len]),
            DType::U64 => Data::U64(vec![0; len]),
            DType::Bool => Data::Bool(vec![false; len]),
            other => Data::Bits(other, vec![0; len]),
        }
    }

    /// The elements gathered at `indices` (each below `len`).
    pub fn take(&self, indices: &[usize]) -> Data {
        map_data!(self, v => indices.iter().map(|&i| v[i]).collect())
    }

    /// The elements read with `strides` from `offset` in the row-major order of `shape`
    /// (a transpose, broadcast or slice), copied without building an index list.
    pub fn gather_strided(&self, shape: &[usize], strides: &[usize], offset: usize) -> Data {
        map_data!(self, v => strided_copy(v, shape, strides, offset))
    }

    /// The elements at `indices`, with `None` filled from element 0 of `fill` (same dtype).
    pub fn take_or(&self, indices: &[Option<usize>], fill: &Data) -> Data {
        match (self, fill) {
            (Data::F32(v), Data::F32(f)) => Data::F32(take_or(v, indices, f[0])),
            (Data::F64(v), Data::F64(f)) => Data::F64(take_or(v, indices, f[0])),
            (Data::F16(v), Data::F16(f)) => Data::F16(take_or(v, indices, f[0])),
            (Data::BF16(v), Data::BF16(f)) => Data::BF16(take_or(v, indices, f[0])),
            (Data::I8(v), Data::I8(f)) => Data::I8(take_or(v, indices, f[0])),
            (Data::I16(v), Data::I16(f)) => Data::I16(take_or(v, indices, f[0])),
            (Data::I32(v), Data::I32(f)) => Data::I32(take_or(v, indices, f[0])),
            (Data::I64(v), Data::I64(f)) => Data::I64(take_or(v, indices, f[0])),
            (Data::U8(v), Data::U8(f)) => Data::U8(take_or(v, indices, f[0])),
            (Data::U16(v), Data::U16(f)) => Data::U16(take_or(v, indices, f[0])),
            (Data::U32(v), Data::U32(f)) => Data::U32(take_or(v, indices, f[0])),
            (Data::U64(v), Data::U64(f)) => Data::U64(take_or(v, indices, f[0])),
            (Data::Bool(v), Data::Bool(f)) => Data::Bool(take_or(v, indices, f[0])),
            (Data::Bits(d, v), Data::Bits(_, f)) => Data::Bits(*d, take_or(v, indices, f[0])),
            (data, _) => {
                let zero = Data::zeros(data.dtype(), 1);
                data.take_or(indices, &zero)
            }
        }
    }

    /// Concatenates pieces of the same type.
    pub fn concat(dtype: DType, pieces: &[&Data]) -> Data {
        let mut out = Data::zeros(dtype, 0);
        for piece in pieces {
            out.extend_from(piece);
        }
        out
    }

    /// Appends the elements of `other` (same type; others are converted).
    pub fn extend_from(&mut self, other: &Data) {
        let converted;
        let other = if other.dtype() == self.dtype() {
            other
        } else {
            converted = other.cast(self.dtype(), true);
            &converted
        };
        match (self, other) {
            (Data::F32(a), Data::F32(b)) => a.extend_from_slice(b),
            (Data::F64(a), Data::F64(b)) => a.extend_from_slice(b),
            (Data::F16(a), Data::F16(b)) => a.extend_from_slice(b),
            (Data::BF16(a), Data::BF16(b)) => a.extend_from_slice(b),
            (Data::I8(a), Data::I8(b)) => a.extend_from_slice(b),
            (Data::I16(a), Data::I16(b)) => a.extend_from_slice(b),
            (Data::I32(a), Data::I32(b)) => a.extend_from_slice(b),
            (Data::I64(a), Data::I64(b)) => a.extend_from_slice(b),
            (Data::U8(a), Data::U8(b)) => a.extend_from_slice(b),
            (Data::U16(a), Data::U16(b)) => a.extend_from_slice(b),
            (Data::U32(a), Data::U32(b)) => a.extend_from_slice(b),
            (Data::U64(a), Data::U64(b)) => a.extend_from_slice(b),
            (Data::Bool(a), Data::Bool(b)) => a.extend_from_slice(b),
            (Data::Bits(_, a), Data::Bits(_, b)) => a.extend_from_slice(b),
            _ => {}
        }
    }

    /// Every element as f64 (the bit-pattern types decoded).
    pub fn to_f64s(&self) -> Vec<f64> {
        match self {
            Data::Bits(dtype, v) => v.iter().map(|&b| minifloat::decode(*dtype, b)).collect(),
            _ => with_data!(self, v => v.iter().map(|x| x.to_f64()).collect()),
        }
    }

    /// The elements as f32: borrowed when they already are, converted otherwise.
    pub fn f32s(&self) -> std::borrow::Cow<'_, [f32]> {
        match self {
            Data::F32(v) => std::borrow::Cow::Borrowed(v),
            other => std::borrow::Cow::Owned(other.to_f32s()),
        }
    }

    /// Every element as f32.
    pub fn to_f32s(&self) -> Vec<f32> {
        match self {
            Data::F32(v) => v.clone(),
            Data::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Data::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
            _ => self.to_f64s().into_iter().map(|x| x as f32).collect(),
        }
    }

    /// Every element as i64 (floats truncated).
    pub fn to_i64s(&self) -> Vec<i64> {
        match self {
            Data::Bits(dtype, v) if !dtype.is_float() => v
                .iter()
                .map(|&b| minifloat::decode(*dtype, b) as i64)
                .collect(),
            Data::Bits(..) => self.to_f64s().into_iter().map(|x| x as i64).collect(),
            _ => with_data!(self, v => v.iter().map(|x| x.to_i64()).collect()),
        }
    }

    /// f32 values stored as `dtype` (rounding to nearest; integers truncate).
    pub fn from_f32s(dtype: DType, values: Vec<f32>) -> Data {
        match dtype {
            DType::F32 => Data::F32(values),
            DType::F16 => Data::F16(values.into_iter().map(f16::from_f32).collect()),
            DType::BF16 => Data::BF16(values.into_iter().map(bf16::from_f32).collect()),
            _ => Data::from_f64s(dtype, values.into_iter().map(f64::from).collect(), true),
        }
    }

    /// f64 values stored as `dtype`; `saturate` clamps 8-bit float results to their range.
    pub fn from_f64s(dtype: DType, values: Vec<f64>, saturate: bool) -> Data {
        fn conv<T: Elem>(values: Vec<f64>) -> Vec<T> {
            values.into_iter().map(T::from_f64).collect()
        }
        match dtype {
            DType::F32 => Data::F32(conv(values)),
            DType::F64 => Data::F64(values),
            DType::F16 => Data::F16(conv(values)),
            DType::BF16 => Data::BF16(conv(values)),
            DType::I8 => Data::I8(conv(values)),
            DType::I16 => Data::I16(conv(values)),
            DType::I32 => Data::I32(conv(values)),
            DType::I64 => Data::I64(conv(values)),
            DType::U8 => Data::U8(conv(values)),
            DType::U16 => Data::U16(conv(values)),
            DType::U32 => Data::U32(conv(values)),
            DType::U64 => Data::U64(conv(values)),
            DType::Bool => Data::Bool(conv(values)),
            other => Data::Bits(
                other,
                values
                    .into_iter()
                    .map(|x| minifloat::encode(other, x, saturate, minifloat::Rounding::Nearest))
                    .collect(),
            ),
        }
    }

    /// i64 values stored as `dtype` (wrapping).
    pub fn from_i64s(dtype: DType, values: Vec<i64>) -> Data {
        fn conv<T: Elem>(values: Vec<i64>) -> Vec<T> {
            values.into_iter().map(T::from_i64).collect()
        }
        match dtype {
            DType::I64 => Data::I64(values),
            DType::I32 => Data::I32(conv(values)),
            DType::I16 => Data::I16(conv(values)),
            DType::I8 => Data::I8(conv(values)),
            DType::U64 => Data::U64(conv(values)),
            DType::U32 => Data::U32(conv(values)),
            DType::U16 => Data::U16(conv(values)),
            DType::U8 => Data::U8(conv(values)),
            DType::Bool => Data::Bool(conv(values)),
            DType::F32 => Data::F32(conv(values)),
            DType::F64 => Data::F64(conv(values)),
            DType::F16 => Data::F16(conv(values)),
            DType::BF16 => Data::BF16(conv(values)),
            other => Data::from_f64s(other, values.into_iter().map(|v| v as f64).collect(), true),
        }
    }

    /// Converts to another element type with ONNX `Cast` semantics.
    pub fn cast(&self, to: DType, saturate: bool) -> Data {
        self.cast_rounding(to, saturate, minifloat::Rounding::Nearest)
    }

    /// `cast` with an explicit rounding for the E8M0 target.
    pub fn cast_rounding(&self, to: DType, saturate: bool, rounding: minifloat::Rounding) -> Data {
        if self.dtype() == to {
            return self.clone();
        }
        let from = self.dtype();
        let int_like = |d: DType| d.is_integer() || d == DType::Bool;
        if int_like(from) && int_like(to) && from != DType::U64 {
            return Data::from_i64s(to, self.to_i64s());
        }
        match (self, to) {
            (Data::F16(v), DType::F32) => Data::F32(v.iter().map(|x| x.to_f32()).collect()),
            (Data::BF16(v), DType::F32) => Data::F32(v.iter().map(|x| x.to_f32()).collect()),
            (Data::F32(v), DType::F16) => Data::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
            (Data::F32(v), DType::BF16) => {
                Data::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect())
            }
            (_, DType::F8E8M0) => Data::Bits(
                to,
                self.to_f64s()
                    .into_iter()
                    .map(|x| minifloat::encode(to, x, saturate, rounding))
                    .collect(),
            ),
            (Data::U64(v), _) if int_like(to) => {
                Data::from_i64s(to, v.iter().map(|&x| x as i64).collect())
            }
            _ => Data::from_f64s(to, self.to_f64s(), saturate),
        }
    }
}

/// Calls `f` with the source position of the first element of every innermost row of `shape`
/// read with `strides` from `offset`, in row-major order (once, with `offset`, for a scalar).
pub(crate) fn for_each_row(
    shape: &[usize],
    strides: &[usize],
    offset: usize,
    mut f: impl FnMut(usize),
) {
    if shape.contains(&0) {
        return;
    }
    let rank = shape.len();
    if rank <= 1 {
        f(offset);
        return;
    }
    let mut index = vec![0usize; rank];
    let mut position = offset;
    loop {
        f(position);
        let mut axis = rank - 1;
        loop {
            if axis == 0 {
                return;
            }
            axis -= 1;
            index[axis] += 1;
            position += strides[axis];
            if index[axis] < shape[axis] {
                break;
            }
            position -= strides[axis] * shape[axis];
            index[axis] = 0;
        }
    }
}

fn strided_copy<T: Copy>(v: &[T], shape: &[usize], strides: &[usize], offset: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(shape.iter().product());
    let (inner, step) = match shape.last() {
        Some(&n) => (n, strides[shape.len() - 1]),
        None => (1, 1),
    };
    for_each_row(shape, strides, offset, |p| {
        if step == 1 {
            out.extend_from_slice(&v[p..p + inner]);
        } else {
            out.extend((0..inner).map(|j| v[p + j * step]));
        }
    });
    out
}

fn take_or<T: Copy>(v: &[T], indices: &[Option<usize>], fill: T) -> Vec<T> {
    indices
        .iter()
        .map(|i| match i {
            Some(i) => v[*i],
            None => fill,
        })
        .collect()
}

impl Array {
    /// An array of the given shape and data (lengths must agree).
    pub fn new(shape: Vec<usize>, data: Data) -> Array {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Array { shape, data }
    }

    /// A scalar.
    pub fn scalar(data: Data) -> Array {
        Array::new(Vec::new(), data)
    }

    /// An f32 array.
    pub fn f32(shape: Vec<usize>, values: Vec<f32>) -> Array {
        Array::new(shape, Data::F32(values))
    }

    /// An i64 array.
    pub fn i64(shape: Vec<usize>, values: Vec<i64>) -> Array {
        Array::new(shape, Data::I64(values))
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Rank.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The same elements under another shape of equal size.
    pub fn reshaped(mut self, shape: Vec<usize>) -> Array {
        debug_assert_eq!(shape.iter().product::<usize>(), self.len());
        self.shape = shape;
        self
    }

    /// Unpacks a constant tensor.
    pub fn from_tensor(tensor: &Tensor) -> Array {
        let bytes = &tensor.data[..];
        let count = tensor.len();
        macro_rules! read {
            ($t:ty, $n:expr) => {
                bytes
                    .chunks_exact($n)
                    .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk of exact size")))
                    .collect()
            };
        }
        let data = match tensor.dtype {
            DType::F32 => Data::F32(read!(f32, 4)),
            DType::F64 => Data::F64(read!(f64, 8)),
            DType::F16 => Data::F16(read!(f16, 2)),
            DType::BF16 => Data::BF16(read!(bf16, 2)),
            DType::I8 => Data::I8(read!(i8, 1)),
            DType::I16 => Data::I16(read!(i16, 2)),
            DType::I32 => Data::I32(read!(i32, 4)),
            DType::I64 => Data::I64(read!(i64, 8)),
            DType::U8 => Data::U8(bytes.to_vec()),
            DType::U16 => Data::U16(read!(u16, 2)),
            DType::U32 => Data::U32(read!(u32, 4)),
            DType::U64 => Data::U64(read!(u64, 8)),
            DType::Bool => Data::Bool(bytes.iter().map(|&b| b != 0).collect()),
            dtype => {
                let bits = dtype.bits();
                let per_byte = 8 / bits;
                let mask = ((1u16 << bits) - 1) as u8;
                Data::Bits(
                    dtype,
                    (0..count)
                        .map(|i| (bytes[i / per_byte] >> ((i % per_byte) * bits)) & mask)
                        .collect(),
                )
            }
        };
        Array::new(tensor.shape.clone(), data)
    }

    /// Packs into a constant tensor.
    pub fn to_tensor(&self) -> Tensor {
        macro_rules! write {
            ($v:expr) => {
                $v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()
            };
        }
        let bytes = match &self.data {
            Data::F32(v) => write!(v),
            Data::F64(v) => write!(v),
            Data::F16(v) => write!(v),
            Data::BF16(v) => write!(v),
            Data::I8(v) => write!(v),
            Data::I16(v) => write!(v),
            Data::I32(v) => write!(v),
            Data::I64(v) => write!(v),
            Data::U8(v) => v.clone(),
            Data::U16(v) => write!(v),
            Data::U32(v) => write!(v),
            Data::U64(v) => write!(v),
            Data::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
            Data::Bits(dtype, v) => {
                let bits = dtype.bits();
                let per_byte = 8 / bits;
                let mut out = vec![0u8; v.len().div_ceil(per_byte)];
                for (i, &b) in v.iter().enumerate() {
                    out[i / per_byte] |= b << ((i % per_byte) * bits);
                }
                out
            }
        };
        Tensor {
            dtype: self.dtype(),
            shape: self.shape.clone(),
            data: bytes.into(),
        }
    }
}

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_round_trip_packs_int4() {
        let array = Array::new(vec![3], Data::Bits(DType::I4, vec![0x1, 0xF, 0x8]));
        let tensor = array.to_tensor();
        assert_eq!(&tensor.data[..], &[0xF1, 0x08]);
        assert_eq!(Array::from_tensor(&tensor), array);
        assert_eq!(array.data.to_i64s(), vec![1, -1, -8]);
    }

    #[test]
    fn cast_follows_numpy() {
        let data = Data::F32(vec![1.7, -1.7, 300.0]);
        assert_eq!(data.cast(DType::I32, false), Data::I32(vec![1, -1, 300]));
        assert_eq!(
            Data::I64(vec![0, 2]).cast(DType::Bool, false),
            Data::Bool(vec![false, true])
        );
    }
}

//! Matrix products: `Gemm`, batched `MatMul`, `Einsum`, integer matmul and `Det`.

use super::elementwise::{broadcast_shape, broadcast_strides, expand, strided_indices};
use super::R;
use crate::array::{Array, Data};
use gemm::Parallelism;
use rayon::prelude::*;
use sparkc_ir::einsum::Equation;
use sparkc_ir::DType;

/// A strided view of a matrix.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a, T> {
    /// Elements.
    pub data: &'a [T],
    /// Distance between rows.
    pub rs: usize,
    /// Distance between columns.
    pub cs: usize,
}

impl<'a, T> Mat<'a, T> {
    /// A row-major matrix with `cols` columns.
    pub(crate) fn rows(data: &'a [T], cols: usize) -> Mat<'a, T> {
        Mat {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with `cols` columns.
    pub(crate) fn transposed(data: &'a [T], cols: usize) -> Mat<'a, T> {
        Mat {
            data,
            rs: 1,
            cs: cols,
        }
    }

    /// A `rows×cols` matrix stored row-major, or stored transposed (`cols×rows` row-major).
    pub(crate) fn stored(data: &'a [T], transposed: bool, rows: usize, cols: usize) -> Mat<'a, T> {
        if transposed {
            Mat::transposed(data, rows)
        } else {
            Mat::rows(data, cols)
        }
    }

    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// Products smaller than this many multiply-adds run on one thread.
pub(crate) const PARALLEL_MACS: usize = 1 << 20;

/// `c[m×n] = a[m×k]·b[k×n]` (added to `c` when `accumulate`), through the `gemm` crate.
///
/// Large products are split into one block of rows (or of columns, for short wide products) per
/// thread, each a single-threaded gemm call: this scales better than gemm's own threading at the
/// sizes transformer layers use.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_into<T: Copy + Send + Sync + 'static + num_one::One>(
    m: usize,
    n: usize,
    k: usize,
    a: Mat<T>,
    b: Mat<T>,
    c: &mut [T],
    accumulate: bool,
    parallel: bool,
) {
    assert!(
        a.fits(m, k) && b.fits(k, n) && c.len() >= m * n,
        "matmul operands out of bounds"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].iter_mut().for_each(|v| *v = T::zero());
        }
        return;
    }
    let threads = rayon::current_num_threads();
    if !parallel || threads == 1 || m * n * k < PARALLEL_MACS {
        // SAFETY: the operands were checked above to hold the extents gemm reads and writes.
        unsafe { gemm_block(m, n, k, a, b, c.as_mut_ptr(), n, accumulate) };
        return;
    }
    let c = &mut c[..m * n];
    if m >= 8 * threads {
        let rows = m.div_ceil(threads);
        c.par_chunks_mut(rows * n)
            .enumerate()
            .for_each(|(t, block)| {
                let r0 = t * rows;
                let a_block = Mat {
                    data: &a.data[r0 * a.rs..],
                    rs: a.rs,
                    cs: a.cs,
                };
                // SAFETY: `block` holds rows r0.. of c, and `a_block` the matching rows of a.
                unsafe {
                    gemm_block(
                        block.len() / n,
                        n,
                        k,
                        a_block,
                        b,
                        block.as_mut_ptr(),
                        n,
                        accumulate,
                    )
                };
            });
    } else {
        let cols = n.div_ceil(threads);
        let base = SendPtr(c.as_mut_ptr());
        (0..n.div_ceil(cols)).into_par_iter().for_each(|t| {
            let c0 = t * cols;
            let width = cols.min(n - c0);
            let b_block = Mat {
                data: &b.data[c0 * b.cs..],
                rs: b.rs,
                cs: b.cs,
            };
            let base = &base;
            // SAFETY: each task writes only columns c0..c0+width of c, which no other task touches.
            unsafe { gemm_block(m, width, k, a, b_block, base.0.add(c0), n, accumulate) };
        });
    }
}

/// A pointer that tasks writing disjoint parts of one buffer may share.
pub(crate) struct SendPtr<T>(pub(crate) *mut T);

impl<T> SendPtr<T> {
    /// The pointer `offset` elements on.
    ///
    /// # Safety
    /// As for `pointer::add`: the result must stay inside the buffer.
    pub(crate) unsafe fn at(&self, offset: usize) -> *mut T {
        // SAFETY: guaranteed by the caller.
        unsafe { self.0.add(offset) }
    }
}
// SAFETY: only used for writes to disjoint regions, one region per task.
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SendPtr<T> {}

/// One single-threaded gemm call writing `m×n` results at `c` with row stride `ldc`.
///
/// # Safety
/// `a` and `b` must hold the `m×k` and `k×n` strided extents, and `c` must be valid for writes at
/// every `i·ldc + j` with `i < m`, `j < n`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_block<T: Copy + 'static + num_one::One>(
    m: usize,
    n: usize,
    k: usize,
    a: Mat<T>,
    b: Mat<T>,
    c: *mut T,
    ldc: usize,
    accumulate: bool,
) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

/// Unit and zero of the element types gemm runs on.
pub(crate) mod num_one {
    /// The multiplicative and additive identities.
    pub trait One: Copy {
        /// 1
        fn one() -> Self;
        /// 0
        fn zero() -> Self;
    }
    impl One for f32 {
        fn one() -> Self {
            1.0
        }
        fn zero() -> Self {
            0.0
        }
    }
    impl One for f64 {
        fn one() -> Self {
            1.0
        }
        fn zero() -> Self {
            0.0
        }
    }
}

/// ONNX `Gemm`: `alpha·A'·B' + beta·C`.
pub(crate) fn gemm_op(
    a: &Array,
    b: &Array,
    c: Option<&Array>,
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
) -> R<Array> {
    if a.rank() != 2 || b.rank() != 2 {
        return Err(format!(
            "A and B must be 2-D, found {:?} and {:?}",
            a.shape, b.shape
        ));
    }
    let (m, k) = if trans_a {
        (a.shape[1], a.shape[0])
    } else {
        (a.shape[0], a.shape[1])
    };
    let (kb, n) = if trans_b {
        (b.shape[1], b.shape[0])
    } else {
        (b.shape[0], b.shape[1])
    };
    if k != kb {
        return Err(format!("inner dims differ: A' is {m}x{k}, B' is {kb}x{n}"));
    }
    let dtype = a.dtype();
    if dtype == DType::F64 || dtype.is_integer() {
        let (av, bv) = (a.data.to_f64s(), b.data.to_f64s());
        let (am, bm) = (
            Mat::stored(&av, trans_a, m, k),
            Mat::stored(&bv, trans_b, k, n),
        );
        let mut out = vec![0.0f64; m * n];
        matmul_into(m, n, k, am, bm, &mut out, false, true);
        out.iter_mut().for_each(|v| *v *= f64::from(alpha));
        if let (Some(c), true) = (c, beta != 0.0) {
            let cv = expand(c, &[m, n]).data.to_f64s();
            out.iter_mut()
                .zip(cv)
                .for_each(|(o, c)| *o += f64::from(beta) * c);
        }
        return Ok(Array::new(vec![m, n], Data::from_f64s(dtype, out, false)));
    }
    let (av, bv) = (a.data.f32s(), b.data.f32s());
    let (am, bm) = (
        Mat::stored(&av, trans_a, m, k),
        Mat::stored(&bv, trans_b, k, n),
    );
    let mut out = match c {
        Some(c) if beta != 0.0 => {
            let mut cv = expand(c, &[m, n]).data.to_f32s();
            let scale = beta / alpha;
            if alpha != 0.0 && scale != 1.0 {
                cv.iter_mut().for_each(|v| *v *= scale);
            }
            cv
        }
        _ => vec![0.0f32; m * n],
    };
    let accumulate = c.is_some() && beta != 0.0 && alpha != 0.0;
    matmul_into(m, n, k, am, bm, &mut out, accumulate, true);
    if alpha != 1.0 {
        if alpha == 0.0 {
            out = match c {
                Some(c) => expand(c, &[m, n])
                    .data
                    .to_f32s()
                    .iter()
                    .map(|v| v * beta)
                    .collect(),
                None => vec![0.0; m * n],
            };
        } else {
            out.iter_mut().for_each(|v| *v *= alpha);
        }
    }
    Ok(Array::new(vec![m, n], Data::from_f32s(dtype, out)))
}

/// numpy `matmul`: 1-D operands promoted, batch dims broadcast.
/// The array with its last two axes swapped when `swap` is set, else borrowed as it is.
pub(crate) fn swap_last_two(x: &Array, swap: bool) -> R<std::borrow::Cow<'_, Array>> {
    if !swap {
        return Ok(std::borrow::Cow::Borrowed(x));
    }
    let rank = x.rank() as i64;
    if rank < 2 {
        return Err(format!(
            "a transposed operand needs rank 2 or more, found rank {rank}"
        ));
    }
    let mut perm: Vec<i64> = (0..rank).collect();
    perm.swap(rank as usize - 2, rank as usize - 1);
    Ok(std::borrow::Cow::Owned(super::shape::transpose(x, &perm)?))
}

pub(crate) fn matmul(a: &Array, b: &Array) -> R<Array> {
    if a.rank() == 0 || b.rank() == 0 {
        return Err("MatMul operands must not be scalars".into());
    }
    let a_shape = if a.rank() == 1 {
        vec![1, a.shape[0]]
    } else {
        a.shape.clone()
    };
    let b_shape = if b.rank() == 1 {
        vec![b.shape[0], 1]
    } else {
        b.shape.clone()
    };
    let (m, k) = (a_shape[a_shape.len() - 2], a_shape[a_shape.len() - 1]);
    let (kb, n) = (b_shape[b_shape.len() - 2], b_shape[b_shape.len() - 1]);
    if k != kb {
        return Err(format!("inner dims differ: {:?} · {:?}", a.shape, b.shape));
    }
    let a_batch = &a_shape[..a_shape.len() - 2];
    let b_batch = &b_shape[..b_shape.len() - 2];
    let batch = broadcast_shape(&[a_batch, b_batch])?;
    let mut shape = batch.clone();
    if a.rank() > 1 {
        shape.push(m);
    }
    if b.rank() > 1 {
        shape.push(n);
    }
    let count: usize = batch.iter().product();
    let dtype = a.dtype();
    if dtype != b.dtype() {
        return Err(format!(
            "operands have different types {} and {}",
            dtype,
            b.dtype()
        ));
    }
    // Offsets of each batch's matrix within A and B (0 stride along broadcast batch axes).
    let a_index = strided_indices(&batch, &broadcast_strides(a_batch, &batch), 0);
    let b_index = strided_indices(&batch, &broadcast_strides(b_batch, &batch), 0);
    let data = match dtype {
        DType::F64 => Data::F64(batched(
            &a.data.to_f64s(),
            &b.data.to_f64s(),
            &a_index,
            &b_index,
            m,
            n,
            k,
            b_batch.iter().product::<usize>() == 1,
        )),
        t if t.is_integer() => {
            let (av, bv) = (a.data.to_i64s(), b.data.to_i64s());
            let mut out = vec![0i64; count * m * n];
            for (p, chunk) in out.chunks_mut((m * n).max(1)).enumerate().take(count) {
                let (ao, bo) = (a_index[p] * m * k, b_index[p] * k * n);
                for i in 0..m {
                    for j in 0..n {
                        chunk[i * n + j] = (0..k).fold(0i64, |s, l| {
                            s.wrapping_add(av[ao + i * k + l].wrapping_mul(bv[bo + l * n + j]))
                        });
                    }
                }
            }
            Data::from_i64s(dtype, out)
        }
        _ => {
            let out = batched(
                &a.data.f32s(),
                &b.data.f32s(),
                &a_index,
                &b_index,
                m,
                n,
                k,
                b_batch.iter().product::<usize>() == 1,
            );
            Data::from_f32s(dtype, out)
        }
    };
    Ok(Array::new(shape, data))
}

#[allow(clippy::too_many_arguments)]
fn batched<T: Copy + Send + Sync + 'static + num_one::One>(
    a: &[T],
    b: &[T],
    a_index: &[usize],
    b_index: &[usize],
    m: usize,
    n: usize,
    k: usize,
    shared_b: bool,
) -> Vec<T> {
    let count = a_index.len();
    let mut out = vec![T::zero(); count * m * n];
    if count == 0 || m * n == 0 {
        return out;
    }
    // One tall product when B is shared and A's batches are contiguous.
    let contiguous_a = a_index.iter().enumerate().all(|(p, &i)| i == p);
    if shared_b && contiguous_a {
        matmul_into(
            count * m,
            n,
            k,
            Mat::rows(a, k),
            Mat::rows(b, n),
            &mut out,
            false,
            true,
        );
        return out;
    }
    let one = |p: usize, chunk: &mut [T], parallel: bool| {
        let a = &a[a_index[p] * m * k..(a_index[p] + 1) * m * k];
        let b = &b[b_index[p] * k * n..(b_index[p] + 1) * k * n];
        matmul_into(
            m,
            n,
            k,
            Mat::rows(a, k),
            Mat::rows(b, n),
            chunk,
            false,
            parallel,
        );
    };
    if count >= rayon::current_num_threads() && m * n * k < 1 << 20 {
        out.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(p, chunk)| one(p, chunk, false));
    } else {
        out.chunks_mut(m * n)
            .enumerate()
            .for_each(|(p, chunk)| one(p, chunk, true));
    }
    out
}

/// Einstein summation over any number of operands, with `...` and implicit outputs.
pub(crate) fn einsum(equation: &str, inputs: &[&Array]) -> R<Array> {
    let ranks: Vec<usize> = inputs.iter().map(|x| x.rank()).collect();
    let Equation { operands, output } = Equation::parse(equation, &ranks)?;
    if let ([x], [labels]) = (inputs, &operands[..]) {
        // One operand, each label once, all kept: the axes permuted, any dtype as it is.
        let perm: Option<Vec<i64>> = output
            .iter()
            .map(|l| labels.iter().position(|m| m == l).map(|p| p as i64))
            .collect();
        let distinct = labels
            .iter()
            .enumerate()
            .all(|(i, l)| !labels[..i].contains(l));
        if let Some(perm) = perm.filter(|p| distinct && p.len() == labels.len()) {
            return super::shape::transpose(x, &perm);
        }
    }
    let mut sizes: std::collections::BTreeMap<char, usize> = std::collections::BTreeMap::new();
    for (labels, x) in operands.iter().zip(inputs) {
        for (&l, &d) in labels.iter().zip(&x.shape) {
            let e = sizes.entry(l).or_insert(d);
            if *e == 1 {
                *e = d;
            } else if d != 1 && *e != d {
                return Err(format!("label '{l}' has sizes {e} and {d}"));
            }
        }
    }
    let summed: Vec<char> = sizes
        .keys()
        .copied()
        .filter(|l| !output.contains(l))
        .collect();
    let all: Vec<char> = output.iter().chain(&summed).copied().collect();
    let dims: Vec<usize> = all.iter().map(|l| sizes[l]).collect();
    let values: Vec<Vec<f64>> = inputs.iter().map(|x| x.data.to_f64s()).collect();
    let strides: Vec<Vec<usize>> = operands
        .iter()
        .zip(inputs)
        .map(|(labels, x)| {
            let own = crate::array::strides(&x.shape);
            all.iter()
                .map(|l| {
                    labels
                        .iter()
                        .enumerate()
                        .filter(|(i, c)| *c == l && x.shape[*i] != 1)
                        .map(|(i, _)| own[i])
                        .sum()
                })
                .collect()
        })
        .collect();
    let out_len: usize = dims[..output.len()].iter().product();
    let inner: usize = dims[output.len()..].iter().product();
    let mut out = vec![0.0f64; out_len];
    let mut index = vec![0usize; all.len()];
    for o in out.iter_mut() {
        let mut total = 0.0;
        for _ in 0..inner {
            let mut product = 1.0;
            for (v, s) in values.iter().zip(&strides) {
                product *= v[index.iter().zip(s).map(|(i, s)| i * s).sum::<usize>()];
            }
            total += product;
            for d in (output.len()..all.len()).rev() {
                index[d] += 1;
                if index[d] < dims[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        *o = total;
        for d in (0..output.len()).rev() {
            index[d] += 1;
            if index[d] < dims[d] {
                break;
            }
            index[d] = 0;
        }
    }
    let shape = dims[..output.len()].to_vec();
    Ok(Array::new(
        shape,
        Data::from_f64s(inputs[0].dtype(), out, false),
    ))
}

/// Determinant of each trailing square matrix, by LU decomposition with partial pivoting.
pub(crate) fn det(x: &Array) -> R<Array> {
    let rank = x.rank();
    if rank < 2 || x.shape[rank - 1] != x.shape[rank - 2] {
        return Err(format!(
            "input must end in square matrices, found {:?}",
            x.shape
        ));
    }
    let n = x.shape[rank - 1];
    let values = x.data.to_f64s();
    let out: Vec<f64> = values
        .chunks(n * n)
        .map(|m| {
            let mut a = m.to_vec();
            let mut det = 1.0;
            for col in 0..n {
                let pivot = (col..n)
                    .max_by(|&p, &q| a[p * n + col].abs().total_cmp(&a[q * n + col].abs()))
                    .unwrap_or(col);
                if a[pivot * n + col] == 0.0 {
                    return 0.0;
                }
                if pivot != col {
                    for j in 0..n {
                        a.swap(pivot * n + j, col * n + j);
                    }
                    det = -det;
                }
                det *= a[col * n + col];
                for r in col + 1..n {
                    let f = a[r * n + col] / a[col * n + col];
                    for j in col..n {
                        a[r * n + j] -= f * a[col * n + j];
                    }
                }
            }
            det
        })
        .collect();
    Ok(Array::new(
        x.shape[..rank - 2].to_vec(),
        Data::from_f64s(x.dtype(), out, false),
    ))
}

#[cfg(test)]
mod tests {
    use super::einsum;
    use crate::array::Array;

    #[test]
    fn an_einsum_that_only_permutes_keeps_every_bit_of_its_values() {
        // Above 2^53, where a trip through f64 would round.
        let values: Vec<i64> = (0..24).map(|i| (1i64 << 60) + i).collect();
        let x = Array::i64(vec![2, 3, 4], values.clone());
        let y = einsum("ijk->kij", &[&x]).expect("permutes");
        assert_eq!(y.shape, [4, 2, 3]);
        let got = y.data.to_i64s();
        for (i, j, k) in
            (0..2).flat_map(|i| (0..3).flat_map(move |j| (0..4).map(move |k| (i, j, k))))
        {
            assert_eq!(got[k * 6 + i * 3 + j], values[i * 12 + j * 4 + k]);
        }
        let swapped = einsum("...ij->...ji", &[&x]).expect("swaps");
        assert_eq!(swapped.shape, [2, 4, 3]);
        assert_eq!(swapped.data.to_i64s()[1], values[4]);
    }

    #[test]
    fn an_einsum_that_sums_or_repeats_a_label_is_not_a_permutation() {
        let x = Array::f32(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]);
        let rows = einsum("ij->i", &[&x]).expect("sums");
        assert_eq!(rows.data.f32s().as_ref(), [3.0, 7.0]);
        let trace = einsum("ii->", &[&x]).expect("a trace");
        assert_eq!(trace.data.f32s().as_ref(), [5.0]);
    }
}

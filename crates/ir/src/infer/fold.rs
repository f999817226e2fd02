//! Compile-time values of small tensors: the shape arithmetic exporters emit
//! (`Shape → Gather → Concat → Reshape`, `Range`, `Where(Equal(...))`), kept symbolic.

use super::Ctx;
use crate::dim::Dim;
use crate::dtype::DType;
use crate::graph::MAX_KNOWN_ELEMENTS;
use crate::op::{Binary, Variadic};
use crate::tensor::Tensor;
use crate::types::{Known, Shape};

fn static_dims(shape: &Shape) -> Option<Vec<usize>> {
    shape
        .as_ref()?
        .iter()
        .map(|d| d.as_const().and_then(|v| usize::try_from(v).ok()))
        .collect()
}

/// For each element of `out`, the flat index of the element of `input` it broadcasts from.
fn broadcast_index(out: &[usize], input: &[usize]) -> Vec<usize> {
    let total: usize = out.iter().product();
    let offset = out.len() - input.len();
    (0..total)
        .map(|flat| {
            let mut rem = flat;
            let mut index = 0;
            let mut stride = 1;
            for axis in (0..out.len()).rev() {
                let coord = rem % out[axis];
                rem /= out[axis];
                if axis >= offset {
                    let size = input[axis - offset];
                    if size != 1 {
                        index += coord * stride;
                    }
                    stride *= size;
                }
            }
            index
        })
        .collect()
}

/// Elements of several known inputs broadcast to `out`, or `None` when any is unknown or too big.
fn broadcast_all<'a>(
    knowns: &[(Option<&'a Known>, &Shape)],
    out: &Shape,
) -> Option<(Vec<&'a Known>, Vec<Vec<usize>>)> {
    let out = static_dims(out)?;
    if out.iter().product::<usize>() > MAX_KNOWN_ELEMENTS {
        return None;
    }
    let mut values = Vec::new();
    let mut maps = Vec::new();
    for (known, shape) in knowns {
        values.push((*known)?);
        maps.push(broadcast_index(&out, &static_dims(shape)?));
    }
    Some((values, maps))
}

pub(super) fn neg(known: Option<&Known>) -> Option<Known> {
    Some(match known? {
        Known::Ints(v) => Known::Ints(v.iter().map(|d| -d.clone()).collect()),
        Known::Floats(v) => Known::Floats(v.iter().map(|x| -x).collect()),
    })
}

fn int_op(op: &Binary, a: &Dim, b: &Dim) -> Option<Dim> {
    Some(match op {
        Binary::Add => a.clone() + b.clone(),
        Binary::Sub => a.clone() - b.clone(),
        Binary::Mul => a.clone() * b.clone(),
        // Integer Div truncates; sizes are non-negative, where truncation and floor agree.
        Binary::Div => match (a.as_const(), b.as_const()) {
            (Some(x), Some(y)) => Dim::known(x.checked_div(y)?),
            _ => a.floor_div(b),
        },
        Binary::Equal => match (a.as_const(), b.as_const()) {
            (Some(x), Some(y)) => Dim::known(i64::from(x == y)),
            _ if a == b => Dim::known(1),
            _ => return None,
        },
        Binary::Less
        | Binary::Greater
        | Binary::LessOrEqual
        | Binary::GreaterOrEqual
        | Binary::Mod { .. } => {
            let (x, y) = (a.as_const()?, b.as_const()?);
            Dim::known(match op {
                Binary::Less => i64::from(x < y),
                Binary::Greater => i64::from(x > y),
                Binary::LessOrEqual => i64::from(x <= y),
                Binary::GreaterOrEqual => i64::from(x >= y),
                Binary::Mod { fmod: true } => x.checked_rem(y)?,
                _ => x.checked_rem(y).map(|r| {
                    if r != 0 && (r < 0) != (y < 0) {
                        r + y
                    } else {
                        r
                    }
                })?,
            })
        }
        _ => return None,
    })
}

fn float_op(op: &Binary, a: f64, b: f64) -> Option<f64> {
    Some(match op {
        Binary::Add => a + b,
        Binary::Sub => a - b,
        Binary::Mul => a * b,
        Binary::Div => a / b,
        Binary::Pow => a.powf(b),
        _ => return None,
    })
}

pub(super) fn binary(
    op: &Binary,
    a: Option<&Known>,
    b: Option<&Known>,
    sa: &Shape,
    sb: &Shape,
    out: &Shape,
) -> Option<Known> {
    let (values, maps) = broadcast_all(&[(a, sa), (b, sb)], out)?;
    match (values[0], values[1]) {
        (Known::Ints(x), Known::Ints(y)) => maps[0]
            .iter()
            .zip(&maps[1])
            .map(|(&i, &j)| int_op(op, &x[i], &y[j]))
            .collect::<Option<Vec<_>>>()
            .map(Known::Ints),
        (Known::Floats(x), Known::Floats(y)) => maps[0]
            .iter()
            .zip(&maps[1])
            .map(|(&i, &j)| float_op(op, x[i], y[j]))
            .collect::<Option<Vec<_>>>()
            .map(Known::Floats),
        _ => None,
    }
}

pub(super) fn variadic(kind: Variadic, ctx: &Ctx, out: &Shape) -> Option<Known> {
    let shapes: Vec<Shape> = (0..ctx.inputs.len())
        .map(|i| ctx.shape(i).ok().cloned().flatten())
        .collect();
    let knowns: Vec<(Option<&Known>, &Shape)> = (0..ctx.inputs.len())
        .map(|i| (ctx.known(i), &shapes[i]))
        .collect();
    let (values, maps) = broadcast_all(&knowns, out)?;
    let ints: Vec<&Vec<Dim>> = values
        .iter()
        .map(|k| match k {
            Known::Ints(v) => Some(v),
            Known::Floats(_) => None,
        })
        .collect::<Option<_>>()?;
    (0..maps[0].len())
        .map(|e| {
            let mut acc = ints[0][maps[0][e]].clone();
            for (v, map) in ints.iter().zip(&maps).skip(1) {
                let d = &v[map[e]];
                acc = match kind {
                    Variadic::Max => acc.max(d),
                    Variadic::Min => acc.min(d),
                    Variadic::Sum => acc + d.clone(),
                    Variadic::Mean => return None,
                };
            }
            (!acc.is_dynamic()).then_some(acc)
        })
        .collect::<Option<Vec<_>>>()
        .map(Known::Ints)
}

pub(super) fn where_(ctx: &Ctx, out: &Shape) -> Option<Known> {
    let shapes: Vec<Shape> = (0..3)
        .map(|i| ctx.shape(i).ok().cloned().flatten())
        .collect();
    let (values, maps) = broadcast_all(
        &[
            (ctx.known(0), &shapes[0]),
            (ctx.known(1), &shapes[1]),
            (ctx.known(2), &shapes[2]),
        ],
        out,
    )?;
    let cond = values[0].as_i64s()?;
    let pick = |e: usize| cond[maps[0][e]] != 0;
    Some(match (values[1], values[2]) {
        (Known::Ints(x), Known::Ints(y)) => Known::Ints(
            (0..maps[0].len())
                .map(|e| {
                    if pick(e) {
                        x[maps[1][e]].clone()
                    } else {
                        y[maps[2][e]].clone()
                    }
                })
                .collect(),
        ),
        (Known::Floats(x), Known::Floats(y)) => Known::Floats(
            (0..maps[0].len())
                .map(|e| {
                    if pick(e) {
                        x[maps[1][e]]
                    } else {
                        y[maps[2][e]]
                    }
                })
                .collect(),
        ),
        _ => return None,
    })
}

pub(super) fn cast(known: Option<&Known>, to: DType) -> Option<Known> {
    let known = known?;
    if to.is_float() {
        return known.as_f64s().map(Known::Floats);
    }
    if to == DType::Bool {
        return known.as_f64s().map(|v| {
            Known::Ints(
                v.into_iter()
                    .map(|x| Dim::known(i64::from(x != 0.0)))
                    .collect(),
            )
        });
    }
    match known {
        Known::Ints(v) => Some(Known::Ints(v.clone())),
        Known::Floats(v) => v
            .iter()
            .map(|x| x.is_finite().then(|| Dim::known(x.trunc() as i64)))
            .collect::<Option<_>>()
            .map(Known::Ints),
    }
}

pub(super) fn gather(ctx: &Ctx, axis: i64) -> Option<Known> {
    let data = ctx.known(0)?;
    let indices = ctx.known_i64s(1)?;
    let dims = static_dims(ctx.shape(0).ok()?)?;
    if dims.len() != 1 || !(axis == 0 || axis == -1) {
        return None;
    }
    let n = dims[0] as i64;
    let picks: Vec<usize> = indices
        .iter()
        .map(|&i| {
            let i = if i < 0 { i + n } else { i };
            (0..n).contains(&i).then_some(i as usize)
        })
        .collect::<Option<_>>()?;
    Some(match data {
        Known::Ints(v) => Known::Ints(picks.iter().map(|&i| v[i].clone()).collect()),
        Known::Floats(v) => Known::Floats(picks.iter().map(|&i| v[i]).collect()),
    })
}

pub(super) fn concat(ctx: &Ctx) -> Option<Known> {
    // Only 0-D and 1-D inputs, the shape-vector case; larger concats are not shape arithmetic.
    let mut ints = Vec::new();
    let mut floats = Vec::new();
    for i in 0..ctx.inputs.len() {
        if ctx.shape(i).ok()?.as_ref()?.len() > 1 {
            return None;
        }
        match ctx.known(i)? {
            Known::Ints(v) => ints.extend(v.iter().cloned()),
            Known::Floats(v) => floats.extend(v.iter().cloned()),
        }
    }
    match (ints.is_empty(), floats.is_empty()) {
        (false, true) => Some(Known::Ints(ints)),
        (true, false) => Some(Known::Floats(floats)),
        (true, true) => Some(Known::Ints(Vec::new())),
        _ => None,
    }
}

pub(super) fn slice(
    known: Option<&Known>,
    dims: &[Dim],
    ranges: &[(usize, i64, i64, i64)],
) -> Option<Known> {
    let known = known?;
    if dims.len() != 1 || ranges.len() != 1 {
        return None;
    }
    let n = dims[0].as_const()?;
    let (_, start, end, step) = ranges[0];
    let norm = |v: i64| if v < 0 { v.saturating_add(n) } else { v };
    let picks: Vec<usize> = if step > 0 {
        let (s, e) = (norm(start).clamp(0, n), norm(end).clamp(0, n));
        (s..e).step_by(step as usize).map(|i| i as usize).collect()
    } else {
        let (s, e) = (norm(start).clamp(0, n - 1), norm(end).clamp(-1, n - 1));
        let mut out = Vec::new();
        let mut i = s;
        while i > e {
            out.push(i as usize);
            i += step;
        }
        out
    };
    Some(match known {
        Known::Ints(v) => Known::Ints(picks.iter().map(|&i| v[i].clone()).collect()),
        Known::Floats(v) => Known::Floats(picks.iter().map(|&i| v[i]).collect()),
    })
}

pub(super) fn constant_of_shape(value: &Tensor, shape: &Shape) -> Option<Known> {
    let count: usize = static_dims(shape)?.iter().product();
    if count > MAX_KNOWN_ELEMENTS {
        return None;
    }
    if value.dtype.is_float() {
        let v = *value.to_f64s()?.first()?;
        Some(Known::Floats(vec![v; count]))
    } else {
        let v = *value.to_i64s()?.first()?;
        Some(Known::Ints(vec![Dim::known(v); count]))
    }
}

/// Length and (when small and constant) values of `Range(start, limit, delta)`.
pub(super) fn range(ctx: &Ctx) -> (Dim, Option<Known>) {
    let scalar = |i: usize| -> Option<Known> {
        let k = ctx.known(i)?;
        (k.len() == 1).then(|| k.clone())
    };
    let (Some(start), Some(limit), Some(delta)) = (scalar(0), scalar(1), scalar(2)) else {
        return (Dim::Dynamic, None);
    };
    if let (Known::Ints(s), Known::Ints(l), Known::Ints(d)) = (&start, &limit, &delta) {
        let (s, l, d) = (&s[0], &l[0], &d[0]);
        let Some(step) = d.as_const().filter(|&v| v != 0) else {
            return (Dim::Dynamic, None);
        };
        let len = if step > 0 {
            (l.clone() - s.clone()).ceil_div(&Dim::known(step))
        } else {
            (s.clone() - l.clone()).ceil_div(&Dim::known(-step))
        };
        let len = match len.as_const() {
            Some(v) => Dim::known(v.max(0)),
            None => len,
        };
        let values = match (len.as_const(), s.as_const()) {
            (Some(n), Some(first)) if n as usize <= MAX_KNOWN_ELEMENTS => Some(Known::Ints(
                (0..n).map(|i| Dim::known(first + i * step)).collect(),
            )),
            _ => None,
        };
        return (len, values);
    }
    let (Some(s), Some(l), Some(d)) = (start.as_f64s(), limit.as_f64s(), delta.as_f64s()) else {
        return (Dim::Dynamic, None);
    };
    let (s, l, d) = (s[0], l[0], d[0]);
    if d == 0.0 || !((l - s) / d).is_finite() {
        return (Dim::Dynamic, None);
    }
    let n = ((l - s) / d).ceil().max(0.0) as i64;
    let values = (n as usize <= MAX_KNOWN_ELEMENTS)
        .then(|| Known::Floats((0..n).map(|i| s + i as f64 * d).collect()));
    (Dim::known(n), values)
}

//! Size expressions evaluated for concrete dims, and buffers placed in one activation arena.

use crate::proto::{Buffer, BufferKind, SizeExpr};

/// The value of `expr` with symbols bound by `bind`; an error names an unbound symbol, a
/// data-dependent size, or an overflow.
pub fn eval(expr: &SizeExpr, bind: &dyn Fn(&str) -> Option<i64>) -> Result<i64, String> {
    if expr.dynamic {
        return Err("the size depends on tensor data".into());
    }
    let mut sum: i64 = 0;
    for term in &expr.terms {
        let mut value = term.coefficient;
        for f in &term.factors {
            let v = match &f.numerator {
                Some(num) if f.divisor > 0 => eval(num, bind)?.div_euclid(f.divisor),
                Some(_) => return Err(format!("division by {}", f.divisor)),
                None => {
                    bind(&f.symbol).ok_or_else(|| format!("symbol `{}` is not bound", f.symbol))?
                }
            };
            value = value
                .checked_mul(v)
                .ok_or_else(|| "the size overflows".to_string())?;
        }
        sum = sum
            .checked_add(value)
            .ok_or_else(|| "the size overflows".to_string())?;
    }
    Ok(sum)
}

impl std::fmt::Display for SizeExpr {
    /// The size as a formula: `2·batch·seq + 16`, `floor((seq + 1) / 2)`, `?` when data decides.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.dynamic {
            return f.write_str("?");
        }
        if self.terms.is_empty() {
            return f.write_str("0");
        }
        for (i, term) in self.terms.iter().enumerate() {
            let mut coefficient = term.coefficient;
            if i > 0 {
                f.write_str(if coefficient < 0 { " - " } else { " + " })?;
                coefficient = coefficient.abs();
            }
            let mut parts = Vec::with_capacity(term.factors.len() + 1);
            if coefficient != 1 || term.factors.is_empty() {
                parts.push(coefficient.to_string());
            }
            for factor in &term.factors {
                parts.push(match &factor.numerator {
                    Some(num) => format!("floor(({num}) / {})", factor.divisor),
                    None => factor.symbol.clone(),
                });
            }
            f.write_str(&parts.join("·"))?;
        }
        Ok(())
    }
}

/// Where each buffer of a plan lives for one binding of the symbolic dims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arrangement {
    /// Byte offset in the arena of each non-weight buffer (weights: their section offset).
    pub offsets: Vec<u64>,
    /// Bytes of each buffer.
    pub sizes: Vec<u64>,
    /// Arena size: the peak of simultaneously live bytes, after alignment and fragmentation.
    pub arena_bytes: u64,
}

const ALIGN: u64 = 256;

/// Places every non-weight buffer in one arena: largest first, each at the lowest aligned
/// offset that no buffer live at the same time already covers.
pub fn arrange(
    buffers: &[Buffer],
    bind: &dyn Fn(&str) -> Option<i64>,
) -> Result<Arrangement, String> {
    let mut sizes = Vec::with_capacity(buffers.len());
    for b in buffers {
        let expr = b
            .bytes
            .as_ref()
            .ok_or_else(|| format!("buffer `{}` has no size", b.name))?;
        let bytes = eval(expr, bind).map_err(|e| format!("buffer `{}`: {e}", b.name))?;
        sizes.push(
            u64::try_from(bytes)
                .map_err(|_| format!("buffer `{}` has negative size {bytes}", b.name))?,
        );
    }
    let mut order: Vec<usize> = (0..buffers.len())
        .filter(|&i| buffers[i].kind() != BufferKind::Weight)
        .collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(sizes[i]), i));
    let mut offsets = vec![0u64; buffers.len()];
    let mut placed: Vec<(u64, u64, u32, u32)> = Vec::new();
    let mut arena = 0u64;
    for i in order {
        let (first, last) = (buffers[i].first, buffers[i].last);
        let size = sizes[i].div_ceil(ALIGN) * ALIGN;
        let mut busy: Vec<(u64, u64)> = placed
            .iter()
            .filter(|p| p.2 <= last && first <= p.3)
            .map(|p| (p.0, p.1))
            .collect();
        busy.sort_unstable();
        let mut at = 0u64;
        for (start, end) in busy {
            if at + size <= start {
                break;
            }
            at = at.max(end);
        }
        offsets[i] = at;
        placed.push((at, at + size, first, last));
        arena = arena.max(at + size);
    }
    for (i, b) in buffers.iter().enumerate() {
        if b.kind() == BufferKind::Weight {
            offsets[i] = b.weight_offset;
        }
    }
    Ok(Arrangement {
        offsets,
        sizes,
        arena_bytes: arena,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_expressions_print_as_formulas() {
        let mut half = size(1, Some("seq"));
        half.terms.push(Term {
            coefficient: 1,
            factors: Vec::new(),
        });
        let expr = SizeExpr {
            terms: vec![
                Term {
                    coefficient: 2,
                    factors: vec![
                        Factor {
                            symbol: "batch".into(),
                            ..Factor::default()
                        },
                        Factor {
                            numerator: Some(Box::new(half)),
                            divisor: 2,
                            ..Factor::default()
                        },
                    ],
                },
                Term {
                    coefficient: -16,
                    factors: Vec::new(),
                },
            ],
            dynamic: false,
        };
        assert_eq!(expr.to_string(), "2·batch·floor((seq + 1) / 2) - 16");
        assert_eq!(size(64, None).to_string(), "64");
        assert_eq!(size(1, Some("n")).to_string(), "n");
        let data = SizeExpr {
            terms: Vec::new(),
            dynamic: true,
        };
        assert_eq!(data.to_string(), "?");
    }
    use crate::proto::{Factor, Term};

    fn size(coefficient: i64, symbol: Option<&str>) -> SizeExpr {
        SizeExpr {
            terms: vec![Term {
                coefficient,
                factors: symbol
                    .map(|s| Factor {
                        symbol: s.into(),
                        ..Factor::default()
                    })
                    .into_iter()
                    .collect(),
            }],
            dynamic: false,
        }
    }

    fn buffer(name: &str, bytes: SizeExpr, first: u32, last: u32) -> Buffer {
        Buffer {
            name: name.into(),
            bytes: Some(bytes),
            first,
            last,
            ..Buffer::default()
        }
    }

    #[test]
    fn floor_division_and_symbols_evaluate() {
        let inner = size(3, Some("N"));
        let expr = SizeExpr {
            terms: vec![Term {
                coefficient: 2,
                factors: vec![Factor {
                    numerator: Some(Box::new(inner)),
                    divisor: 2,
                    ..Factor::default()
                }],
            }],
            dynamic: false,
        };
        let bind = |s: &str| (s == "N").then_some(5);
        assert_eq!(eval(&expr, &bind), Ok(14));
        assert!(eval(&expr, &|_| None).unwrap_err().contains("`N`"));
    }

    #[test]
    fn buffers_with_disjoint_lifetimes_share_memory() {
        let plan = [
            buffer("a", size(1000, None), 0, 1),
            buffer("b", size(1000, None), 1, 2),
            buffer("c", size(4, Some("N")), 2, 3),
        ];
        let bind = |_: &str| Some(250);
        let got = arrange(&plan, &bind).expect("arranges");
        // a and b overlap at step 1; c (1000 bytes) reuses a's space.
        assert_ne!(got.offsets[0], got.offsets[1]);
        assert_eq!(got.offsets[2], got.offsets[0]);
        assert_eq!(got.arena_bytes, 2048);
    }
}

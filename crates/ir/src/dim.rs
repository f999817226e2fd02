//! Symbolic dimensions: integer polynomials over named symbols, with floor division.
//!
//! A [`Dim`] is either a polynomial in named symbols (`N`, `S`, `3*N+1`, `(H-1)//2+1`) or
//! [`Dim::Dynamic`], a size that only the data decides (the output of `NonZero`, a `Loop`'s trip
//! count). Constants are polynomials with only a constant term.

use serde::{Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Add, Mul, Neg, Sub};
use std::sync::Arc;

/// A factor of a monomial: a named symbol, or a floor division that does not simplify.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Atom {
    /// A named symbolic size, such as a dynamic batch `N`.
    Sym(Arc<str>),
    /// `floor(numerator / divisor)` with a positive constant divisor that does not divide evenly.
    FloorDiv(Box<Poly>, i64),
}

/// A polynomial with integer coefficients: monomial (sorted atoms) to coefficient.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Poly {
    terms: BTreeMap<Vec<Atom>, i64>,
}

/// One tensor dimension, or one element of a tensor of sizes: a polynomial, or data-dependent.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A size known at compile time up to named symbols.
    Expr(Poly),
    /// A size that depends on tensor data and is known only at run time.
    Dynamic,
}

impl Poly {
    fn constant(value: i64) -> Poly {
        let mut terms = BTreeMap::new();
        if value != 0 {
            terms.insert(Vec::new(), value);
        }
        Poly { terms }
    }

    fn atom(atom: Atom) -> Poly {
        Poly {
            terms: BTreeMap::from([(vec![atom], 1)]),
        }
    }

    fn as_const(&self) -> Option<i64> {
        match self.terms.len() {
            0 => Some(0),
            1 => self.terms.get(&Vec::new()).copied(),
            _ => None,
        }
    }

    fn checked_add(&self, other: &Poly, sign: i64) -> Option<Poly> {
        let mut terms = self.terms.clone();
        for (mono, coef) in &other.terms {
            let entry = terms.entry(mono.clone()).or_insert(0);
            *entry = entry.checked_add(coef.checked_mul(sign)?)?;
            if *entry == 0 {
                terms.remove(mono);
            }
        }
        Some(Poly { terms })
    }

    fn checked_mul(&self, other: &Poly) -> Option<Poly> {
        let mut out = Poly::default();
        for (ma, ca) in &self.terms {
            for (mb, cb) in &other.terms {
                let mut mono: Vec<Atom> = ma.iter().chain(mb.iter()).cloned().collect();
                mono.sort();
                let term = Poly {
                    terms: BTreeMap::from([(mono, ca.checked_mul(*cb)?)]),
                };
                out = out.checked_add(&term, 1)?;
            }
        }
        Some(out)
    }

    /// Divides by a single monomial `coef * atoms` when every term is an exact multiple of it.
    fn div_exact(&self, divisor: &Poly) -> Option<Poly> {
        if divisor.terms.len() != 1 {
            return (self == divisor).then(|| Poly::constant(1));
        }
        let (dmono, dcoef) = divisor.terms.iter().next()?;
        let mut out = Poly::default();
        for (mono, coef) in &self.terms {
            if coef % dcoef != 0 {
                return None;
            }
            let mut rest = mono.clone();
            for atom in dmono {
                let at = rest.iter().position(|a| a == atom)?;
                rest.remove(at);
            }
            out.terms.insert(rest, coef / dcoef);
        }
        Some(out)
    }

    fn is_single_symbol(&self) -> bool {
        self.terms.len() == 1 && self.terms.iter().all(|(m, c)| *c == 1 && m.len() == 1)
    }
}

impl Poly {
    /// The monomials (sorted atoms) and their coefficients; the constant term has no atoms.
    pub fn terms(&self) -> impl Iterator<Item = (&[Atom], i64)> {
        self.terms
            .iter()
            .map(|(mono, coef)| (mono.as_slice(), *coef))
    }

    /// The value with every symbol bound by `bind`; `None` if one is unbound or it overflows.
    pub fn eval(&self, bind: &dyn Fn(&str) -> Option<i64>) -> Option<i64> {
        let mut total = 0i64;
        for (mono, coef) in self.terms() {
            let mut product = coef;
            for atom in mono {
                let factor = match atom {
                    Atom::Sym(name) => bind(name)?,
                    Atom::FloorDiv(num, divisor) => num.eval(bind)?.div_euclid(*divisor),
                };
                product = product.checked_mul(factor)?;
            }
            total = total.checked_add(product)?;
        }
        Some(total)
    }

    fn collect_symbols(&self, out: &mut Vec<Arc<str>>) {
        for (mono, _) in self.terms() {
            for atom in mono {
                match atom {
                    Atom::Sym(name) => {
                        if !out.contains(name) {
                            out.push(name.clone());
                        }
                    }
                    Atom::FloorDiv(num, _) => num.collect_symbols(out),
                }
            }
        }
    }
}

impl Dim {
    /// The size with every symbol bound by `bind`; `None` if dynamic, unbound or overflowing.
    pub fn eval(&self, bind: &dyn Fn(&str) -> Option<i64>) -> Option<i64> {
        match self {
            Dim::Expr(p) => p.eval(bind),
            Dim::Dynamic => None,
        }
    }

    /// The symbols this size mentions, in first-seen order.
    pub fn symbols(&self) -> Vec<Arc<str>> {
        let mut out = Vec::new();
        if let Dim::Expr(p) = self {
            p.collect_symbols(&mut out);
        }
        out
    }

    /// A constant size.
    pub fn known(value: i64) -> Dim {
        Dim::Expr(Poly::constant(value))
    }

    /// A named symbolic size.
    pub fn sym(name: &str) -> Dim {
        Dim::Expr(Poly::atom(Atom::Sym(Arc::from(name))))
    }

    /// The constant value, if this dim has no symbols.
    pub fn as_const(&self) -> Option<i64> {
        match self {
            Dim::Expr(p) => p.as_const(),
            Dim::Dynamic => None,
        }
    }

    /// True when the size is fixed at compile time (no symbols, not data-dependent).
    pub fn is_const(&self) -> bool {
        self.as_const().is_some()
    }

    /// True when only the data decides this size.
    pub fn is_dynamic(&self) -> bool {
        matches!(self, Dim::Dynamic)
    }

    /// Floor division, kept symbolic when the divisor is a positive constant that does not divide evenly.
    pub fn floor_div(&self, divisor: &Dim) -> Dim {
        let (Dim::Expr(a), Dim::Expr(b)) = (self, divisor) else {
            return Dim::Dynamic;
        };
        match (a.as_const(), b.as_const()) {
            (_, Some(0)) => Dim::Dynamic,
            (Some(x), Some(y)) => match x.checked_div(y) {
                Some(q) => Dim::known(q - i64::from(x % y != 0 && (x < 0) != (y < 0))),
                None => Dim::Dynamic,
            },
            (_, Some(y)) if y > 0 => match a.div_exact(b) {
                Some(q) => Dim::Expr(q),
                None => Dim::Expr(Poly::atom(Atom::FloorDiv(Box::new(a.clone()), y))),
            },
            _ => a.div_exact(b).map_or(Dim::Dynamic, Dim::Expr),
        }
    }

    /// Ceiling division by a dim (`(a + b - 1) // b` for positive `b`).
    pub fn ceil_div(&self, divisor: &Dim) -> Dim {
        match divisor.as_const() {
            Some(b) if b > 0 => (self.clone() + Dim::known(b - 1)).floor_div(divisor),
            _ => self.floor_div(divisor),
        }
    }

    /// Exact division: `Some` only when the divisor divides this dim with no remainder.
    pub fn div_exact(&self, divisor: &Dim) -> Option<Dim> {
        match (self, divisor) {
            (Dim::Expr(a), Dim::Expr(b)) => {
                if let (Some(x), Some(y)) = (a.as_const(), b.as_const()) {
                    return (y != 0 && x % y == 0).then(|| Dim::known(x / y));
                }
                a.div_exact(b).map(Dim::Expr)
            }
            _ => None,
        }
    }

    /// The larger of two dims when it can be decided (constants, or equal dims).
    pub fn max(&self, other: &Dim) -> Dim {
        match (self.as_const(), other.as_const()) {
            (Some(a), Some(b)) => Dim::known(a.max(b)),
            _ if self == other => self.clone(),
            _ => Dim::Dynamic,
        }
    }

    /// The smaller of two dims when it can be decided (constants, or equal dims).
    pub fn min(&self, other: &Dim) -> Dim {
        match (self.as_const(), other.as_const()) {
            (Some(a), Some(b)) => Dim::known(a.min(b)),
            _ if self == other => self.clone(),
            _ => Dim::Dynamic,
        }
    }

    fn combine(self, other: Dim, f: impl FnOnce(&Poly, &Poly) -> Option<Poly>) -> Dim {
        match (&self, &other) {
            (Dim::Expr(a), Dim::Expr(b)) => f(a, b).map_or(Dim::Dynamic, Dim::Expr),
            _ => Dim::Dynamic,
        }
    }
}

impl Add for Dim {
    type Output = Dim;
    fn add(self, other: Dim) -> Dim {
        self.combine(other, |a, b| a.checked_add(b, 1))
    }
}

impl Sub for Dim {
    type Output = Dim;
    fn sub(self, other: Dim) -> Dim {
        self.combine(other, |a, b| a.checked_add(b, -1))
    }
}

impl Mul for Dim {
    type Output = Dim;
    fn mul(self, other: Dim) -> Dim {
        self.combine(other, |a, b| a.checked_mul(b))
    }
}

impl Neg for Dim {
    type Output = Dim;
    fn neg(self) -> Dim {
        Dim::known(0) - self
    }
}

impl From<i64> for Dim {
    fn from(value: i64) -> Dim {
        Dim::known(value)
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Atom::Sym(name) => f.write_str(name),
            Atom::FloorDiv(num, div) if num.is_single_symbol() => write!(f, "{num}//{div}"),
            Atom::FloorDiv(num, div) => write!(f, "({num})//{div}"),
        }
    }
}

impl fmt::Display for Poly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.terms.is_empty() {
            return f.write_str("0");
        }
        // Highest degree first, the constant last.
        let mut terms: Vec<_> = self.terms.iter().collect();
        terms.sort_by(|(ma, _), (mb, _)| mb.len().cmp(&ma.len()).then(ma.cmp(mb)));
        for (i, (mono, coef)) in terms.into_iter().enumerate() {
            let (sign, magnitude) = if *coef < 0 {
                ("-", coef.unsigned_abs())
            } else {
                ("+", coef.unsigned_abs())
            };
            if i > 0 || sign == "-" {
                f.write_str(sign)?;
            }
            if mono.is_empty() {
                write!(f, "{magnitude}")?;
                continue;
            }
            if magnitude != 1 {
                write!(f, "{magnitude}*")?;
            }
            for (j, atom) in mono.iter().enumerate() {
                if j > 0 {
                    f.write_str("*")?;
                }
                write!(f, "{atom}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Expr(p) => write!(f, "{p}"),
            Dim::Dynamic => f.write_str("?"),
        }
    }
}

impl Serialize for Dim {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.as_const() {
            Some(value) => serializer.serialize_i64(value),
            None => serializer.collect_str(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n() -> Dim {
        Dim::sym("N")
    }

    #[test]
    fn constants_fold() {
        assert_eq!(
            Dim::known(3) * Dim::known(4) + Dim::known(1),
            Dim::known(13)
        );
        assert_eq!(Dim::known(7).floor_div(&Dim::known(2)), Dim::known(3));
        assert_eq!(Dim::known(-7).floor_div(&Dim::known(2)), Dim::known(-4));
        assert_eq!(Dim::known(7).ceil_div(&Dim::known(2)), Dim::known(4));
    }

    #[test]
    fn symbols_stay_symbolic() {
        let d = n() + Dim::known(3);
        assert_eq!(d.to_string(), "N+3");
        assert_eq!(
            (n() * Dim::known(64) * Dim::known(49)).div_exact(&n()),
            Some(Dim::known(3136))
        );
        assert_eq!(
            (n() * Dim::known(6)).floor_div(&Dim::known(3)).to_string(),
            "2*N"
        );
        assert_eq!(
            (n() - Dim::known(1)).floor_div(&Dim::known(2)).to_string(),
            "(N-1)//2"
        );
        assert_eq!((n() * Dim::sym("S")).to_string(), "N*S");
        assert_eq!((n() - n()), Dim::known(0));
    }

    #[test]
    fn dynamic_absorbs() {
        assert_eq!(Dim::Dynamic + n(), Dim::Dynamic);
        assert_eq!(n().max(&Dim::sym("M")), Dim::Dynamic);
        assert_eq!(n().max(&n()), n());
    }

    #[test]
    fn overflow_is_dynamic_not_a_panic() {
        let big = Dim::known(i64::MAX);
        assert_eq!(big.clone() * big, Dim::Dynamic);
    }
}

//! `Einsum` equations: which axis of each operand and of the result carries which label.

/// An `Einsum` equation with its ellipses expanded: one label per axis of each operand and of
/// the result. Subscripts are ASCII letters; the axes an ellipsis stands for get labels above
/// `U+0100`, aligned to the right as broadcasting aligns them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Equation {
    /// The labels of each operand's axes.
    pub operands: Vec<Vec<char>>,
    /// The labels of the result's axes.
    pub output: Vec<char>,
}

/// A term split at its ellipsis: the letters before it and, if it has one, the letters after.
fn split_term(term: &str) -> Result<(&str, Option<&str>), String> {
    let (before, after) = match term.split_once("...") {
        Some((b, a)) => (b, Some(a)),
        None => (term, None),
    };
    let letters = before.chars().chain(after.unwrap_or_default().chars());
    for c in letters {
        if !c.is_ascii_alphabetic() {
            return Err(format!("'{c}' in '{term}' is not a subscript (a letter)"));
        }
    }
    Ok((before, after))
}

/// The label of the `i`th axis an ellipsis stands for.
fn ellipsis_label(i: usize) -> Result<char, String> {
    u32::try_from(0x100 + i)
        .ok()
        .and_then(char::from_u32)
        .ok_or_else(|| format!("an ellipsis of {i} axes is too long"))
}

/// True for the labels of axes an ellipsis stands for.
pub fn is_ellipsis_label(label: char) -> bool {
    !label.is_ascii()
}

impl Equation {
    /// Parses `equation` (spaces allowed, `->` and its result optional) for operands of the
    /// given ranks.
    pub fn parse(equation: &str, ranks: &[usize]) -> Result<Equation, String> {
        let equation: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
        let (lhs, rhs) = match equation.split_once("->") {
            Some((l, r)) => (l, Some(r)),
            None => (equation.as_str(), None),
        };
        let terms: Vec<&str> = lhs.split(',').collect();
        if terms.len() != ranks.len() {
            return Err(format!(
                "the equation has {} operands, the node {} inputs",
                terms.len(),
                ranks.len()
            ));
        }
        let mut split = Vec::with_capacity(terms.len());
        let mut ellipsis_rank = 0;
        for (term, &rank) in terms.iter().zip(ranks) {
            let (before, after) = split_term(term)?;
            let named = before.len() + after.map_or(0, str::len);
            let fits = match after {
                Some(_) => named <= rank,
                None => named == rank,
            };
            if !fits {
                return Err(format!(
                    "term '{term}' does not fit an operand of rank {rank}"
                ));
            }
            if after.is_some() {
                ellipsis_rank = ellipsis_rank.max(rank - named);
            }
            split.push((before, after, rank - named));
        }
        let ellipsis: Vec<char> = (0..ellipsis_rank)
            .map(ellipsis_label)
            .collect::<Result<_, _>>()?;
        let operands: Vec<Vec<char>> = split
            .iter()
            .map(|&(before, after, own)| {
                let mut labels: Vec<char> = before.chars().collect();
                if let Some(after) = after {
                    labels.extend(&ellipsis[ellipsis_rank - own..]);
                    labels.extend(after.chars());
                }
                labels
            })
            .collect();
        let output = match rhs {
            Some(rhs) => {
                let (before, after) = split_term(rhs)?;
                let mut output: Vec<char> = before.chars().collect();
                if let Some(after) = after {
                    output.extend(&ellipsis);
                    output.extend(after.chars());
                }
                for (i, c) in output.iter().enumerate() {
                    if output[..i].contains(c) {
                        return Err(format!("result subscript '{c}' appears twice"));
                    }
                    if !operands.iter().flatten().any(|l| l == c) {
                        return Err(format!("result subscript '{c}' is not in any operand"));
                    }
                }
                output
            }
            None => {
                let mut once: Vec<char> = operands
                    .iter()
                    .flatten()
                    .copied()
                    .filter(|l| {
                        !is_ellipsis_label(*l)
                            && operands.iter().flatten().filter(|&m| m == l).count() == 1
                    })
                    .collect();
                once.sort_unstable();
                ellipsis.iter().copied().chain(once).collect()
            }
        };
        Ok(Equation { operands, output })
    }

    /// True when some operand repeats a label (it reads a diagonal).
    pub fn reads_a_diagonal(&self) -> bool {
        self.operands
            .iter()
            .any(|labels| (1..labels.len()).any(|i| labels[..i].contains(&labels[i])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_and_implicit_results() {
        let e = Equation::parse("bij, bjk -> bik", &[3, 3]).expect("parses");
        assert_eq!(e.operands, vec![vec!['b', 'i', 'j'], vec!['b', 'j', 'k']]);
        assert_eq!(e.output, vec!['b', 'i', 'k']);
        let e = Equation::parse("ji,kj", &[2, 2]).expect("parses");
        assert_eq!(e.output, vec!['i', 'k']);
        let e = Equation::parse("i,i", &[1, 1]).expect("parses");
        assert!(e.output.is_empty());
    }

    #[test]
    fn ellipses_align_to_the_right() {
        let e = Equation::parse("...ij,...jk", &[4, 3]).expect("parses");
        let (a, b) = (ellipsis_label(0).unwrap(), ellipsis_label(1).unwrap());
        assert_eq!(e.operands[0], vec![a, b, 'i', 'j']);
        assert_eq!(e.operands[1], vec![b, 'j', 'k']);
        assert_eq!(e.output, vec![a, b, 'i', 'k']);
        let e = Equation::parse("...ii->...i", &[3]).expect("parses");
        assert!(e.reads_a_diagonal());
    }

    #[test]
    fn bad_equations_say_what_is_wrong() {
        let err = |eq: &str, ranks: &[usize]| Equation::parse(eq, ranks).unwrap_err();
        assert!(err("ij", &[3]).contains("rank 3"));
        assert!(err("ij,jk", &[2]).contains("2 operands"));
        assert!(err("ij->k", &[2]).contains("'k' is not in any operand"));
        assert!(err("ij->ii", &[2]).contains("twice"));
        assert!(err("i1", &[2]).contains("not a subscript"));
    }
}

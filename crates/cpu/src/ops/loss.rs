//! Losses: `NegativeLogLikelihoodLoss` and `SoftmaxCrossEntropyLoss`.

use super::R;
use crate::array::{Array, Data};

/// `NegativeLogLikelihoodLoss`: `-input[n, target[n, d...], d...]` times the target's weight,
/// kept per target (`none`), summed, or averaged over the weights of the counted targets.
pub(crate) fn negative_log_likelihood(
    input: &Array,
    target: &Array,
    weight: Option<&Array>,
    ignore_index: Option<i64>,
    reduction: &str,
) -> R<Array> {
    if input.rank() < 2 || !input.dtype().is_float() {
        return Err(format!(
            "the scores must be floats of rank 2 or more [N, C, d...], found {} {:?}",
            input.dtype(),
            input.shape
        ));
    }
    let (n, classes) = (input.shape[0], input.shape[1]);
    let inner: usize = input.shape[2..].iter().product();
    let mut expected = vec![n];
    expected.extend(&input.shape[2..]);
    if target.shape != expected || target.dtype().is_float() {
        return Err(format!(
            "the targets must be integers of shape {expected:?} (the scores' {:?} without the class axis), found {} {:?}",
            input.shape,
            target.dtype(),
            target.shape
        ));
    }
    if let Some(w) = weight {
        if w.shape != [classes] {
            return Err(format!(
                "the weights must have shape [{classes}], found {:?}",
                w.shape
            ));
        }
    }
    let scores = input.data.to_f64s();
    let labels = target.data.to_i64s();
    let class_weights = weight.map(|w| w.data.to_f64s());
    let mut losses = Vec::with_capacity(labels.len());
    let mut total_weight = 0.0;
    for (p, &label) in labels.iter().enumerate() {
        if Some(label) == ignore_index {
            losses.push(0.0);
            continue;
        }
        let class = usize::try_from(label)
            .ok()
            .filter(|&c| c < classes)
            .ok_or_else(|| {
                format!("target {label} at flat position {p} is not one of the {classes} classes")
            })?;
        let w = class_weights.as_ref().map_or(1.0, |w| w[class]);
        let (i, d) = (p / inner.max(1), p % inner.max(1));
        losses.push(-scores[(i * classes + class) * inner + d] * w);
        total_weight += w;
    }
    let (shape, values) = match reduction {
        "none" => (target.shape.clone(), losses),
        "sum" => (Vec::new(), vec![losses.iter().sum()]),
        "mean" => (Vec::new(), vec![losses.iter().sum::<f64>() / total_weight]),
        other => {
            return Err(format!(
                "reduction '{other}' is not one of none, sum and mean"
            ))
        }
    };
    Ok(Array::new(
        shape,
        Data::from_f64s(input.dtype(), values, false),
    ))
}

/// `SoftmaxCrossEntropyLoss`: the loss of the log-softmax over the class axis, and that
/// log-softmax.
pub(crate) fn softmax_cross_entropy(
    scores: &Array,
    labels: &Array,
    weights: Option<&Array>,
    ignore_index: Option<i64>,
    reduction: &str,
) -> R<Vec<Array>> {
    if scores.rank() < 2 {
        return Err(format!(
            "the scores must have rank 2 or more [N, C, d...], found {:?}",
            scores.shape
        ));
    }
    let log_prob = super::reduce::softmax(scores.clone(), 1, true)?;
    let loss = negative_log_likelihood(&log_prob, labels, weights, ignore_index, reduction)?;
    Ok(vec![loss, log_prob])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_mean_skips_ignored_targets() {
        // Log-probabilities of 2 samples × 3 classes × 2 positions.
        let input = Array::f32(
            vec![2, 3, 2],
            vec![
                -1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -0.5, -1.5, -2.5, -3.5, -4.5, -5.5,
            ],
        );
        let target = Array::new(vec![2, 2], Data::I64(vec![0, 2, 1, -1]));
        let weight = Array::f32(vec![3], vec![1.0, 2.0, 3.0]);
        let none = negative_log_likelihood(&input, &target, Some(&weight), Some(-1), "none")
            .expect("loss");
        assert_eq!(none.data.to_f64s(), vec![1.0, 18.0, 5.0, 0.0]);
        let mean = negative_log_likelihood(&input, &target, Some(&weight), Some(-1), "mean")
            .expect("loss");
        assert_eq!(mean.data.to_f64s(), vec![4.0]);
        let error = negative_log_likelihood(&input, &target, None, None, "sum")
            .expect_err("-1 is not a class");
        assert!(error.contains("target -1 at flat position 3"), "{error}");
    }
}

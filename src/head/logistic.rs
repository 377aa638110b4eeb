//! The logistic-regression baseline (`--head logistic`): linfa-logistic, binary or multinomial, with
//! L2 strength `alpha = 1 / C` (sklearn's `C`; linfa's objective is `sum(loss) + alpha/2 |w|^2`, the
//! intercept unpenalised, as in sklearn). L-BFGS starts from zero and stops, as scikit-learn's
//! default `tol=1e-4` does, once the gradient of the objective divided by the row count (the mean
//! loss, which is what scikit-learn minimises) is below 1e-4: linfa's own default applies 1e-4 to the
//! sum, which on a few hundred wide rows runs on to a different point of a flat optimum
//! (scikit-learn's numbers are those of its early stop). The result is stored as a one-layer
//! [`Network`].

use linfa::prelude::*;
use linfa_logistic::{LogisticRegression, MultiLogisticRegression};
use ndarray::{Array1, Array2, Axis};

use super::net::{Dense, Layer, Network};
use crate::error::{Error, Result};

/// scikit-learn's default stopping tolerance, on the gradient of the mean objective.
const SKLEARN_TOL: f64 = 1e-4;

/// Fits on rows `idx` of `x` (computed in f64); `c` is the inverse regularisation strength.
pub fn fit_logistic(
    x: &Array2<f32>,
    y: &[u32],
    idx: &[usize],
    classes: usize,
    c: f64,
    max_iter: u64,
) -> Result<Network> {
    if !(c > 0.0 && c.is_finite()) {
        return Err(Error::invalid("C", format!("must be positive, got {c}")));
    }
    let xs = x.select(Axis(0), idx).mapv(f64::from);
    let ys: Array1<usize> = idx.iter().map(|&i| y[i] as usize).collect();
    let present: std::collections::BTreeSet<usize> = ys.iter().copied().collect();
    if present.len() != classes {
        return Err(Error::Config(format!(
            "logistic regression needs every class in the training rows: {} of {classes} present",
            present.len()
        )));
    }
    let d = x.ncols();
    let tol = SKLEARN_TOL * idx.len() as f64;
    let fail = |e: String| Error::Config(format!("linfa-logistic: {e}"));
    let (w, b) = if classes == 2 {
        let ds = Dataset::new(xs, ys);
        let m = LogisticRegression::default()
            .alpha(1.0 / c)
            .gradient_tolerance(tol)
            .max_iterations(max_iter)
            .fit(&ds)
            .map_err(|e| fail(e.to_string()))?;
        // linfa's positive class is the more frequent one (the first seen on a tie), so flip the
        // sign when it is class 0: we store P(class 1) = sigmoid(x w + b).
        let sign = if m.labels().pos.class == 1 { 1.0 } else { -1.0 };
        let w = m
            .params()
            .mapv(|v| (sign * v) as f32)
            .into_shape_with_order((d, 1))
            .map_err(|e| fail(e.to_string()))?;
        (w, Array1::from(vec![(sign * m.intercept()) as f32]))
    } else {
        let ds = Dataset::new(xs, ys);
        let m = MultiLogisticRegression::default()
            .alpha(1.0 / c)
            .gradient_tolerance(tol)
            .max_iterations(max_iter)
            .fit(&ds)
            .map_err(|e| fail(e.to_string()))?;
        let mut w = Array2::<f32>::zeros((d, classes));
        let mut b = Array1::<f32>::zeros(classes);
        for (col, &class) in m.classes().iter().enumerate() {
            w.column_mut(class)
                .assign(&m.params().column(col).mapv(|v| v as f32));
            b[class] = m.intercept()[col] as f32;
        }
        (w, b)
    };
    Ok(Network {
        layers: vec![Layer::Dense(Dense {
            w: w.as_standard_layout().into_owned(),
            b,
        })],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::fit::predicted;

    /// sklearn reference (same data, `LogisticRegression(C=1.0).fit(X, y)`):
    /// ```python
    /// import numpy as np; from sklearn.linear_model import LogisticRegression
    /// X = np.array([[0.],[1.],[2.],[3.],[4.],[5.],[6.],[7.],[8.],[9.]]); y = [0,0,0,0,1,1,1,1,1,1]
    /// m = LogisticRegression(C=1.0, tol=1e-10, max_iter=10000).fit(X, y); print(m.coef_, m.intercept_)
    /// # [[1.18107566]] [-4.12613462]
    /// ```
    #[test]
    fn binary_matches_sklearn() {
        let x = Array2::from_shape_fn((10, 1), |(i, _)| i as f32);
        let y = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1];
        let net = fit_logistic(&x, &y, &(0..10).collect::<Vec<_>>(), 2, 1.0, 1000).unwrap();
        let Layer::Dense(d) = &net.layers[0] else {
            panic!()
        };
        assert!((d.w[[0, 0]] - 1.181_075_7).abs() < 2e-3, "{}", d.w);
        assert!((d.b[0] + 4.126_134_6).abs() < 1e-2, "{}", d.b);
        // Same data with class 0 the majority and seen first: linfa's positive class is then 0.
        let y2 = [1, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        let net = fit_logistic(&x, &y2, &(0..10).collect::<Vec<_>>(), 2, 1.0, 1000).unwrap();
        assert_eq!(predicted(&net.logits(&x))[..3], [1, 1, 0]);
    }

    #[test]
    fn multinomial_separates_three_classes_and_keeps_class_order() {
        let y: Vec<u32> = (0..60).map(|i| (i % 3) as u32).collect();
        let x = Array2::from_shape_fn(
            (60, 3),
            |(i, j)| if j == y[i] as usize { 3.0 } else { 0.0 } + (i % 7) as f32 * 0.1,
        );
        let net = fit_logistic(&x, &y, &(0..60).collect::<Vec<_>>(), 3, 1.0, 200).unwrap();
        assert_eq!(predicted(&net.logits(&x)), y);
        assert!(fit_logistic(&x, &y, &[0, 3, 6], 3, 1.0, 10)
            .unwrap_err()
            .to_string()
            .contains("1 of 3"));
    }
}

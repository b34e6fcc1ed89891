//! Tableaux as data (consistency, order conditions, FSAL facts) and time grids.

mod common;

use common::stability_coefficients;
use l2d_solvers::{Method, SolverError, TimeGrid, linspace, shift_time};

#[test]
fn tableaux_are_consistent_and_have_their_order() {
    for m in Method::ALL {
        let tab = m.tableau();
        let s = tab.stages();
        assert_eq!(tab.b.len(), s, "{m}");
        assert_eq!(tab.a.len(), s - 1, "{m}");
        assert_eq!(tab.c[0], 0.0, "{m}");
        for (i, row) in tab.a.iter().enumerate() {
            assert_eq!(row.len(), i + 1, "{m} row {i}");
            let sum: f64 = row.iter().sum();
            assert!(
                (sum - tab.c[i + 1]).abs() < 1e-14,
                "{m}: row {i} sums to {sum}"
            );
        }
        // Quadrature conditions Σ b c^(k−1) = 1/k and the tall-tree conditions
        // b·A^(k−1)·1 = 1/k! up to the order.
        for k in 1..=tab.order as i32 {
            let q: f64 = tab
                .b
                .iter()
                .zip(tab.c)
                .map(|(b, c)| b * c.powi(k - 1))
                .sum();
            assert!(
                (q - 1.0 / f64::from(k)).abs() < 1e-14,
                "{m}: quadrature k={k}: {q}"
            );
        }
        let r = stability_coefficients(tab, tab.order as usize);
        let mut fact = 1.0;
        for (k, rk) in r.iter().enumerate() {
            fact *= (k + 1) as f64;
            assert!(
                (rk - 1.0 / fact).abs() < 1e-14,
                "{m}: z^{} coefficient {rk}",
                k + 1
            );
        }
        if let Some(e) = tab.b_error {
            assert_eq!(e.len(), s);
            assert!(
                e.iter().sum::<f64>().abs() < 1e-15,
                "{m}: error weights sum"
            );
        }
        if let Some(mid) = tab.b_mid {
            assert_eq!(mid.len(), s);
            assert!(
                (mid.iter().sum::<f64>() - 0.5).abs() < 1e-14,
                "{m}: mid weights sum"
            );
        }
        assert_eq!(
            tab.is_adaptive(),
            tab.b_mid.is_some(),
            "{m}: adaptive ones have dense output"
        );
    }
}

#[test]
fn tableau_facts() {
    use Method::*;
    for m in [Bosh3, Dopri5, Tsit5] {
        assert!(m.tableau().is_fsal(), "{m} is FSAL");
    }
    for m in [AdaptiveHeun, Fehlberg2] {
        assert!(
            !m.tableau().is_fsal() && m.tableau().is_pseudo_fsal(),
            "{m} is pseudo-FSAL"
        );
    }
    for m in [Euler, Midpoint, Heun2, Rk4Classic, Rk4ThreeEighths] {
        assert!(
            !m.tableau().reuse_last_stage && !m.is_adaptive(),
            "{m} is a fixed-grid method"
        );
    }
    for m in [Euler, Midpoint] {
        assert!(
            !m.tableau().evaluates_endpoint(),
            "{m} never evaluates at t1"
        );
    }
    for m in [
        Heun2,
        Rk4Classic,
        Rk4ThreeEighths,
        AdaptiveHeun,
        Fehlberg2,
        Bosh3,
        Dopri5,
        Tsit5,
    ] {
        assert!(m.tableau().evaluates_endpoint(), "{m} evaluates at t1");
    }
    let per_step: Vec<usize> = [AdaptiveHeun, Fehlberg2, Bosh3, Dopri5, Tsit5]
        .iter()
        .map(|m| m.tableau().evals_per_step())
        .collect();
    assert_eq!(per_step, [1, 2, 3, 6, 6]);
    // Dormand–Prince's known stability polynomial has z^6/600.
    let r = stability_coefficients(Dopri5.tableau(), 7);
    assert!(
        (r[5] - 1.0 / 600.0).abs() < 1e-15 && r[6].abs() < 1e-15,
        "{r:?}"
    );
    // Tsit5's continuous extension at θ = 1 is its solution row.
    let b1 = l2d_solvers::tableau::tsit5_dense_weights(1.0);
    for (x, y) in b1.iter().zip(Tsit5.tableau().b) {
        assert!((x - y).abs() < 1e-12, "{b1:?}");
    }
}

#[test]
fn method_names() {
    for m in Method::ALL {
        assert_eq!(Method::from_name(m.name()), Some(m));
    }
    assert_eq!(
        Method::from_torchdiffeq_name("rk4"),
        Some(Method::Rk4ThreeEighths)
    );
    assert_eq!(Method::from_torchdiffeq_name("heun"), Some(Method::Heun2));
    assert_eq!(Method::from_torchdiffeq_name("dopri8"), None);
    assert_eq!(Method::from_name("rk4"), None, "ambiguous name rejected");
    assert_ne!(
        Method::Rk4Classic.tableau().c,
        Method::Rk4ThreeEighths.tableau().c
    );
}

#[test]
fn linspace_is_torch_linspace() {
    // Values printed by torch 2.15 `torch.linspace(a, b, n, dtype=torch.float64).tolist()`.
    let t11 = [
        0.0,
        0.1,
        0.2,
        0.30000000000000004,
        0.4,
        0.5,
        0.6,
        0.7,
        0.8,
        0.9,
        1.0,
    ];
    assert_eq!(linspace(0.0, 1.0, 11), t11);
    let t16 = [
        0.0,
        0.06666666666666667,
        0.13333333333333333,
        0.2,
        0.26666666666666666,
        0.3333333333333333,
        0.4,
        0.4666666666666667,
        0.5333333333333333,
        0.6,
        0.6666666666666666,
        0.7333333333333334,
        0.8,
        0.8666666666666667,
        0.9333333333333333,
        1.0,
    ];
    assert_eq!(linspace(0.0, 1.0, 16), t16);
    assert_eq!(
        linspace(0.0, 5.0, 11),
        [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0]
    );
    assert_eq!(linspace(2.0, -1.0, 2), [2.0, -1.0]);
}

#[test]
fn shifted_grid() {
    let s = 3.0;
    let g = TimeGrid::shifted(0.0, 1.0, 5, s).times().unwrap();
    assert_eq!(g[0], 0.0);
    assert_eq!(g[4], 1.0);
    assert_eq!(g[2], 0.5 / (3.0 - 2.0 * 0.5)); // u = 1/2 -> 1/4
    assert!(g.windows(2).all(|w| w[1] > w[0]));
    // Steps cluster near t0 for s > 1: the first interval is the smallest.
    assert!(g[1] - g[0] < g[4] - g[3]);
    // s = 1 is the uniform grid; the shift maps [0, 1] onto itself.
    assert_eq!(
        TimeGrid::shifted(0.0, 1.0, 7, 1.0).times().unwrap(),
        linspace(0.0, 1.0, 7)
    );
    assert_eq!(shift_time(0.0, 0.3), 0.0);
    assert!((shift_time(1.0, 0.3) - 1.0).abs() < 1e-15);
    // On [t0, t1] it is affine in the shifted unit grid.
    let h = TimeGrid::shifted(2.0, 4.0, 5, s).times().unwrap();
    for (a, b) in h.iter().zip(&g) {
        assert!((a - (2.0 + 2.0 * b)).abs() < 1e-15);
    }
    assert!(matches!(
        TimeGrid::shifted(0.0, 1.0, 5, 0.0).times(),
        Err(SolverError::InvalidOption { name: "shift", .. })
    ));
}

#[test]
fn grid_validation() {
    assert_eq!(
        TimeGrid::Given(vec![]).times(),
        Err(SolverError::EmptyGrid { name: "grid" })
    );
    assert_eq!(
        TimeGrid::uniform(0.0, 1.0, 1).times(),
        Err(SolverError::SinglePointGrid {
            name: "grid",
            t: 0.0
        })
    );
    assert!(matches!(
        TimeGrid::Given(vec![0.0, 0.5, 0.5]).times(),
        Err(SolverError::UnorderedGrid { index: 2, .. })
    ));
    assert!(matches!(
        TimeGrid::Given(vec![1.0, 0.5, 0.7]).times(),
        Err(SolverError::UnorderedGrid { index: 2, .. })
    ));
    assert!(matches!(
        TimeGrid::uniform(0.0, 0.0, 3).times(),
        Err(SolverError::UnorderedGrid { index: 1, .. })
    ));
    assert!(matches!(
        TimeGrid::Given(vec![0.0, f64::INFINITY]).times(),
        Err(SolverError::NonFiniteTime { index: 1, .. })
    ));
    assert_eq!(
        TimeGrid::Given(vec![1.0, 0.5, -2.0]).times().unwrap(),
        [1.0, 0.5, -2.0]
    );
}

//! The reference-problem matrix against torchdiffeq 0.2.5
//! (`tests/data/torchdiffeq_reference.jsonl`, written by `scripts/torchdiffeq_reference.py`):
//! fixed grids agree to 1e-10 relative, adaptive results to 10× the tolerance, adaptive NFE to
//! 10 % (in practice all NFE are equal; the table is printed with `--nocapture`).

use l2d_solvers::reference_problems::{RunKind, RunRecord, problems, run, run_specs};

fn reference() -> Vec<RunRecord> {
    let text = include_str!("data/torchdiffeq_reference.jsonl");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("valid reference line"))
        .collect()
}

#[test]
fn reference_problems_match_torchdiffeq() {
    let refs = reference();
    let mut checked = 0;
    println!("| problem | method | setting | nfe (ours) | nfe (torchdiffeq) | max rel diff |");
    println!("|---|---|---|---|---|---|");
    for p in problems() {
        for spec in run_specs() {
            let ours = run(&p, &spec);
            let theirs = refs
                .iter()
                .find(|r| {
                    r.problem == ours.problem
                        && r.method == ours.method
                        && r.setting == ours.setting
                })
                .unwrap_or_else(|| panic!("no reference for {ours:?}"));
            assert_eq!(ours.t1, theirs.t1, "{ours:?}");
            assert!(theirs.error.is_none(), "torchdiffeq failed: {theirs:?}");
            assert!(ours.error.is_none(), "we failed: {ours:?}");
            let (y, y_ref) = (
                ours.y_final.as_ref().unwrap(),
                theirs.y_final.as_ref().unwrap(),
            );
            let (nfe, nfe_ref) = (ours.nfe.unwrap(), theirs.nfe.unwrap());
            assert_eq!(y.len(), y_ref.len());
            let mut max_rel = 0.0f64;
            for (a, b) in y.iter().zip(y_ref) {
                let rel = (a - b).abs() / b.abs().max(1e-300);
                max_rel = max_rel.max(rel);
                match spec.kind {
                    RunKind::Grid(_) => assert!(
                        rel <= 1e-10,
                        "{} {} {}: {a} vs torchdiffeq {b} (rel {rel:e})",
                        ours.problem,
                        ours.method,
                        ours.setting
                    ),
                    RunKind::Tol(tol) => {
                        let bound = 10.0 * (tol + tol * b.abs());
                        assert!(
                            (a - b).abs() <= bound,
                            "{} {} {}: {a} vs torchdiffeq {b} (bound {bound:e})",
                            ours.problem,
                            ours.method,
                            ours.setting
                        )
                    }
                }
            }
            match spec.kind {
                RunKind::Grid(_) => assert_eq!(nfe, nfe_ref, "{ours:?}"),
                RunKind::Tol(_) => assert!(
                    (nfe as f64 - nfe_ref as f64).abs() <= 0.1 * nfe_ref as f64,
                    "{}: nfe {nfe} vs torchdiffeq {nfe_ref}",
                    ours.problem
                ),
            }
            println!(
                "| {} | {} | {} | {nfe} | {nfe_ref} | {max_rel:.1e} |",
                ours.problem, ours.method, ours.setting
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 33);
    assert_eq!(refs.len(), 33, "the reference file has exactly the matrix");
}

//! Prints one JSON line per run of the reference-problem matrix (see
//! `l2d_solvers::reference_problems`): `{problem, method, setting, t1, y_final, nfe}` or
//! `{problem, method, setting, t1, error}`. Compare with
//! `crates/l2d-solvers/tests/data/torchdiffeq_reference.jsonl` (torchdiffeq 0.2.5, produced by
//! `scripts/torchdiffeq_reference.py`).
//!
//! Run: `cargo run -p l2d-solvers --example reference_problems`

fn main() {
    for record in l2d_solvers::reference_problems::run_all() {
        match serde_json::to_string(&record) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("cannot serialise {record:?}: {e}"),
        }
    }
}

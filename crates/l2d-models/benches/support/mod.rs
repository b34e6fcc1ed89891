//! What the benches share.

/// The entries of `all` named in the comma-separated environment variable `var`, or all of
/// them when it is not set (`L2D_BENCH_SIZES=smollm2-135m`, `L2D_BENCH_FORMATS=f32,q4_1`).
pub fn env_filter(var: &str, all: &[&'static str]) -> Vec<&'static str> {
    match std::env::var(var) {
        Ok(list) => all
            .iter()
            .copied()
            .filter(|s| list.split(',').any(|x| x.trim() == *s))
            .collect(),
        Err(_) => all.to_vec(),
    }
}

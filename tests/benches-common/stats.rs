//! Statistics the benchmarks of every crate share: medians and quantiles of interleaved rounds, and
//! the verdict word of a target. Included with `#[path = "…/tests/benches-common/stats.rs"] mod stats;`
//! (a source file, not a crate: the benches of `lastword-spool` cannot depend on the crates built on it).

/// The median (nearest rank) of a non-empty set of values.
pub fn median(values: &mut [f64]) -> f64 {
    quantile(values, 0.5)
}

/// The `q` quantile (nearest rank) of a non-empty set of values.
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = (q * (values.len() - 1) as f64).round() as usize;
    values[rank.min(values.len() - 1)]
}

/// How a table line says whether a target is met.
pub fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISSED" }
}

//! The benches' shared reading of their command line (tests/benches-common/mode.rs), by criterion's
//! rules: what `cargo bench`, `cargo bench -- --quick`, `cargo test --benches` and `--list` ask for.

#[path = "../benches-common/mode.rs"]
mod mode;
use mode::RunMode;

#[test]
fn a_bench_measures_only_under_cargo_bench_and_not_when_profiling() {
    let bench = RunMode::parse(["--bench"]);
    assert_eq!(bench, RunMode { dry: false, list: false, measure: true, quick: false });
    assert_eq!(bench.rounds(5), 5);
    let quick = RunMode::parse(["--bench", "--quick"]);
    assert!(quick.measure && quick.quick);
    assert_eq!((quick.rounds(41), quick.rounds(5), quick.rounds(6)), (13, 1, 3), "a third, odd");
    assert!(!RunMode::parse(["--bench", "--profile-time=5"]).measure);
    assert!(!RunMode::parse(["--bench", "--profile-time=5"]).dry, "profiling runs the real sizes");
}

#[test]
fn without_bench_or_with_test_or_list_a_bench_only_checks_that_it_works() {
    for args in [&[][..], &["--test"][..], &["--bench", "--test"][..], &["--bench", "--list"][..]] {
        let mode = RunMode::parse(args.iter().copied());
        assert!(mode.dry && !mode.measure, "{args:?}: {mode:?}");
    }
    assert!(RunMode::parse(["--list"]).list);
    assert!(RunMode::parse(["--bench=x"]).measure, "a flag with a value counts");
}

//! `#[rule]` on a bad signature is a compile error that points at the
//! mistake. Expected messages are in tests/ui/*.stderr
//! (`TRYBUILD=overwrite cargo test -p vigil-sdk --test compile_errors` rewrites them).

#[test]
fn bad_rule_signatures_are_clear_compile_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}

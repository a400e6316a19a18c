//! Compile-time behaviour of `#[verse::object]`, checked with trybuild: the errors users get
//! (and where they point), and generated code that passes `#![deny(missing_docs)]`.

#[test]
fn object_macro_compile_errors_and_docs() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
    cases.pass("tests/ui-pass/*.rs");
}

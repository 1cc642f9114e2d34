//! Arbitrary bytes as an expression and as a `${{ }}` template: parse, evaluate, rewrite.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../common/expression.rs"]
mod expression;

fuzz_target!(|data: &[u8]| expression::run(data));

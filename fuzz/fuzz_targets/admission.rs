//! Arbitrary bytes as the body of an admission request.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| restrictor_fuzz::admission(body));

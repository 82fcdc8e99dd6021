//! Arbitrary JSON as the object, evaluated as every workload kind under two policies.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| restrictor_fuzz::engine(data));

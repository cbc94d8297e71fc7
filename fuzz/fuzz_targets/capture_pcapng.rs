//! The capture reader and analysis on captures built block by block from the input
//! (`synack_fuzz::capture`), so the fuzzer gets past the headers to the packets: TCP
//! connections whose numbers follow on, DNS, snap lengths, comments, every link type.
//! Beyond not panicking: a well-formed capture must be read, not called damaged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use synack_fuzz::analysis::{Options, run};
use synack_fuzz::capture::Capture;

fuzz_target!(|input: (Options, Capture)| {
    let (options, capture) = input;
    let (bytes, well_formed) = capture.bytes();
    let path = synack_fuzz::scratch_file(&bytes);
    match run(&path, options) {
        Ok(_) => {}
        Err(e) if well_formed => panic!("a well-formed capture was refused: {e}"),
        Err(_) => {}
    }
});

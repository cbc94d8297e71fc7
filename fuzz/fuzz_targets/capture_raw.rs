//! `synack ladder` and `synack stats` on any bytes: the capture reader (pcap and pcapng,
//! every link type) and the analysis on top. Whatever the file holds, they answer with a
//! sentence or a picture, never a panic, and their output is clean text and well-formed
//! SVG. The seeds are real captures (synack's samples, tcpdump's).

#![no_main]

use libfuzzer_sys::fuzz_target;
use synack_fuzz::analysis::{Options, run};

fuzz_target!(|data: &[u8]| {
    let path = synack_fuzz::scratch_file(data);
    let _ = run(&path, Options::default());
});

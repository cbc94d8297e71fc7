//! What synack's fuzz targets share: a second opinion on every packet the stack sends
//! ([`check`]), packets built from fuzz input with etherparse ([`build`]), captures built
//! block by block from fuzz input ([`capture`]), and the analysis that `synack ladder` and
//! `synack stats` run on a capture ([`analysis`]).
//!
//! The targets are in `fuzz_targets/`; README.md says how to run them.

pub mod analysis;
pub mod build;
pub mod capture;
pub mod check;
pub mod session;

/// A file of this process's own to hand bytes to code that reads a path (the capture
/// reader), in memory when /dev/shm is there.
pub fn scratch_file(bytes: &[u8]) -> std::path::PathBuf {
    let dir = std::path::Path::new("/dev/shm");
    let dir = if dir.is_dir() {
        dir.to_owned()
    } else {
        std::env::temp_dir()
    };
    let path = dir.join(format!("synack-fuzz-{}.cap", std::process::id()));
    std::fs::write(&path, bytes).expect("the scratch file can be written");
    path
}

/// rustls's crypto for the targets that speak TLS: ring's, with the system's randomness.
/// synack's seeded provider (`tls::seeded`) leaks a small generator per call by design
/// (rustls wants it `'static`), which LeakSanitizer would report on every input; what
/// the targets check does not depend on the random bytes.
pub fn crypto() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

//! `synack fetch URL`: the userspace stack as the client on a TUN device. Resolve,
//! connect, request, receive, close first, wait out TIME-WAIT; capture and journey as for
//! `serve`, and an exit code that tells the failures apart.

pub mod client;
mod url;

pub use client::{Client, FetchError, Plan, Report};
pub use url::Url;

/// Exit code for an HTTP error status (4xx, 5xx) in the final response.
pub const EXIT_HTTP_ERROR: u8 = 6;

/// The address part of a URL, as the Host header says it.
impl Url {
    pub fn host_header(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

//! synack: a userspace TCP/IP stack on a TUN device that shows the whole journey of an
//! HTTP request, and records every segment in a pcapng capture that explains itself.
//!
//! Layers, from the wire up (see DESIGN.md): [`device`] moves packets; [`capture`] records
//! them and comments them using the independent [`observe`]r; [`stack`] runs smoltcp and
//! the accept queue; [`session`] joins a connection's bytes to [`http`] and the [`app`];
//! [`journey`] keeps what happened as data.

pub mod alloc_count;
pub mod analyze;
pub mod app;
pub mod capture;
pub mod clock;
pub mod demo;
pub mod device;
pub mod dns;
pub mod driver;
pub mod fetch;
pub mod http;
pub mod internals;
pub mod journey;
pub mod link;
pub mod node;
pub mod observe;
pub mod script;
pub mod session;
pub mod tls;

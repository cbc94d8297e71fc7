//! Records every packet that crosses the device, both ways, to pcapng, with a comment on
//! each segment that changes a connection's life.
//!
//! [`Tap`] is a device middleware (smoltcp's `phy::PcapWriter` is the model): it sits
//! between the link and the stack, reads each packet with the independent observer, and
//! holds the packet until the stack has processed it. Only then does the stack know which
//! state transition the packet caused, so packets are written at [`Tap::flush`], which the
//! stack calls after every step, with the [`Note`]s it has for them.

mod pcapng;
mod tap;
mod writer;

pub use pcapng::{PcapngSink, SinkInfo};
pub use tap::{Attach, Note, Tap, TapRx, TapTx, Withheld};

use std::path::PathBuf;

/// Where the default capture goes: a new timestamped file under `captures/`.
pub fn default_path(prefix: &str) -> PathBuf {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (y, mo, d, h, mi, s) = crate::clock::civil_from_unix(now.as_secs());
    PathBuf::from("captures").join(format!(
        "{prefix}-{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}-{:03}.pcapng",
        now.subsec_millis()
    ))
}

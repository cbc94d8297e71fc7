//! The TLS part of a conversation, either side: rustls, the plaintext on its way in and
//! out, and the counts the journey's decrypt and encrypt stages report.

use smoltcp::time::Instant;

use crate::journey::{ConnId, Journal, Stage, What};
use crate::tls::TlsSession;

/// Plaintext is moved in pieces this big: one TLS record's worth (RFC 8446 §5.1).
pub(super) const TLS_PIECE: usize = 16 * 1024;

pub(super) struct TlsLayer {
    pub conn: TlsSession,
    /// Plaintext taken from the encoder and not yet taken by rustls.
    pub plain: Vec<u8>,
    pub plain_sent: usize,
    /// Received plaintext on its way from rustls to the decoder.
    pub scratch: Vec<u8>,
    started: Instant,
    established: bool,
    /// Our close_notify is queued.
    pub notified: bool,
    /// Bytes of TLS records sent, and of plaintext encrypted, since the last message.
    pub records_out: u64,
    pub plain_out: u64,
    /// Bytes of TLS records taken, and of plaintext they opened, since the last event.
    pub records_in: u64,
    pub plain_in: u64,
}

impl TlsLayer {
    pub fn new(conn: TlsSession, now: Instant) -> Self {
        TlsLayer {
            conn,
            plain: Vec::with_capacity(TLS_PIECE),
            plain_sent: 0,
            scratch: vec![0; TLS_PIECE],
            started: now,
            established: false,
            notified: false,
            records_out: 0,
            plain_out: 0,
            records_in: 0,
            plain_in: 0,
        }
    }

    /// Journey events: the handshake's outcome once, when it completes, then what each
    /// batch of records opened into.
    pub fn record(&mut self, id: ConnId, now: Instant, journal: &mut Journal) {
        if self.established {
            if self.plain_in > 0 {
                let what = What::Decrypted {
                    record_bytes: self.records_in,
                    plaintext_bytes: self.plain_in,
                };
                journal.record(Some(id), now.total_micros(), Stage::Decrypt, what);
                self.records_in = 0;
                self.plain_in = 0;
            }
            return;
        }
        if let Some(n) = self.conn.negotiated() {
            self.established = true;
            // From here on the counts are application data only.
            self.records_out = 0;
            self.plain_out = 0;
            journal.record(
                Some(id),
                now.total_micros(),
                Stage::Decrypt,
                What::TlsEstablished {
                    version: n.version,
                    cipher: n.cipher,
                    sni: n.sni,
                    alpn: n.alpn,
                    handshake_us: (now - self.started).total_micros(),
                },
            );
        }
    }

    /// Plaintext encrypted and records sent since the last call.
    pub fn take_encrypted(&mut self) -> (u64, u64) {
        let counts = (self.plain_out, self.records_out);
        self.plain_out = 0;
        self.records_out = 0;
        counts
    }

    /// Queues our close_notify once (RFC 8446 §6.1).
    pub fn notify_close(&mut self) {
        if !self.notified {
            self.notified = true;
            self.conn.close();
        }
    }
}

//! The tap: a device middleware that observes every packet and, when a capture is on,
//! holds it until the stack says what it caused.

use std::cell::RefCell;
use std::io;
use std::time::Duration;

use smoltcp::phy::{self, Device, DeviceCapabilities};
use smoltcp::time::Instant;

use super::PcapngSink;
use crate::device::{DeviceCounters, DeviceError, Link};
use crate::observe::{Direction, FourTuple, Observed, Role, Tracker};

/// Which packet a [`Note`] belongs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// The inbound segment the stack has just processed: it caused what the note says
    /// (a state transition on receipt, a SYN dropped at a full accept queue).
    Inbound,
    /// Our next SYN, FIN or RST on that connection: the application opened, closed or
    /// aborted it, and that segment is where the peer learns of it.
    NextControl,
}

/// Something the stack knows about a packet that the packet alone does not say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub tuple: FourTuple,
    pub attach: Attach,
    pub text: String,
}

/// The most notes that may wait for a FIN or RST; older ones are dropped past this (a
/// connection aborted without ever sending one would otherwise keep its note forever).
const MAX_CARRIED_NOTES: usize = 1024;

/// How stale the file may get while the stack is idle: open it in Wireshark and it holds
/// everything up to this long ago.
pub const SYNC_INTERVAL: smoltcp::time::Duration = smoltcp::time::Duration::from_millis(100);

/// Packets held between two flushes. The stack flushes after every step, so this is only
/// reached if a step moves a burst of packets; then they are written without notes.
const MAX_PENDING: usize = 4096;

struct Pending {
    at: Instant,
    dir: Direction,
    data: Vec<u8>,
    observed: Option<Observed>,
    /// What a layer above did to the packet (the fault injector), for its comment.
    remark: Option<String>,
    /// Held by a layer above and not yet delivered to the stack: it waits here, and so
    /// does everything after it, so that the notes of what it caused find it.
    deferred: bool,
    /// Which packet this is, to find it again when it is delivered.
    serial: u64,
}

struct TapState {
    tracker: Tracker,
    /// Segments that matter to a connection's life, for the stack to read.
    observed: Vec<Observed>,
    sink: Option<PcapngSink>,
    /// A pool: the first `used` entries hold packets; the rest keep their buffers.
    pending: Vec<Pending>,
    used: usize,
    /// Packets recorded so far (the next one's serial).
    serials: u64,
    carried: Vec<Note>,
    failure: Option<io::Error>,
    last_sync: Instant,
    synced_packets: u64,
    synced_chunks: u64,
    /// The connection of the last inbound segment, and whether it was a SYN: the only
    /// sockets that segment can have changed.
    last_inbound: Option<(FourTuple, bool)>,
    /// UDP datagrams to or from this port are DNS and get a comment saying what they ask
    /// or answer.
    dns_port: Option<u16>,
    keylog: Option<std::fs::File>,
}

/// The comment a packet earns on its own: a TCP segment's role, or a DNS message.
fn own_comment(observed: Option<Observed>, packet: &[u8], dns_port: Option<u16>) -> Option<String> {
    if let Some(o) = observed {
        return o.describe();
    }
    let port = dns_port?;
    let ip = etherparse::Ipv4Slice::from_slice(packet).ok()?;
    if ip.payload_ip_number() != etherparse::IpNumber::UDP {
        return None;
    }
    let udp = etherparse::UdpSlice::from_slice(ip.payload().payload).ok()?;
    (udp.source_port() == port || udp.destination_port() == port)
        .then(|| crate::dns::describe(udp.payload()))
}

impl TapState {
    fn record(&mut self, dir: Direction, at: Instant, packet: &[u8], remark: Option<String>) {
        let observed = self.tracker.observe(dir, packet);
        if dir == Direction::In {
            self.last_inbound = observed.map(|o| (o.tuple(), o.segment.syn));
        }
        if let Some(o) = observed.filter(|o| o.role != Role::Other) {
            self.observed.push(o);
        }
        let Some(sink) = self.sink.as_mut() else {
            return;
        };
        // Notes attach only to inbound segments and to our SYNs, FINs and RSTs. Anything
        // else can be written now, if nothing held must go before it: for a download, that
        // is every data segment, and it saves copying each one twice.
        let noteless = dir == Direction::Out && observed.is_none_or(|o| !o.segment.is_control());
        if noteless && self.used == 0 {
            let mut comment = own_comment(observed, packet, self.dns_port);
            if let Some(r) = remark {
                append(&mut comment, r);
            }
            if let Err(e) = sink.write_packet(since_epoch(at), dir, packet, comment) {
                self.fail(e);
            }
            return;
        }
        if self.used == MAX_PENDING {
            // Deferred or not, past this the packets go out without their notes.
            self.write_pending_up_to(MAX_PENDING);
        }
        if self.used == self.pending.len() {
            self.pending.push(Pending {
                at,
                dir,
                data: Vec::new(),
                observed: None,
                remark: None,
                deferred: false,
                serial: 0,
            });
        }
        let slot = &mut self.pending[self.used];
        slot.at = at;
        slot.dir = dir;
        slot.data.clear();
        slot.data.extend_from_slice(packet);
        slot.observed = observed;
        slot.remark = remark;
        slot.deferred = false;
        slot.serial = self.serials;
        self.serials += 1;
        self.used += 1;
    }

    /// Writes the held packets up to the first deferred one.
    fn write_pending(&mut self) {
        let ready = self.pending[..self.used]
            .iter()
            .position(|p| p.deferred)
            .unwrap_or(self.used);
        self.write_pending_up_to(ready);
    }

    /// Writes the first `n` held packets; the rest move to the front.
    fn write_pending_up_to(&mut self, n: usize) {
        let Some(sink) = self.sink.as_mut() else {
            self.used = 0;
            return;
        };
        for p in &mut self.pending[..n] {
            let mut comment = own_comment(p.observed, &p.data, self.dns_port);
            if let Some(r) = p.remark.take() {
                append(&mut comment, r);
            }
            if let Some(o) = p.observed {
                let text = &mut comment;
                let tuple = o.tuple();
                if p.dir == Direction::Out && o.segment.is_control() {
                    self.carried.retain_mut(|note| {
                        if note.tuple != tuple {
                            return true;
                        }
                        append(text, std::mem::take(&mut note.text));
                        false
                    });
                }
            }
            if let Err(e) = sink.write_packet(since_epoch(p.at), p.dir, &p.data, comment) {
                self.used = 0;
                self.fail(e);
                return;
            }
        }
        // The written entries' buffers go behind the waiting ones, for reuse.
        self.pending[..self.used].rotate_left(n);
        self.used -= n;
    }

    /// The capture cannot go on (disk full, file gone): say so once and stop capturing.
    fn fail(&mut self, e: io::Error) {
        if let Some(sink) = self.sink.take() {
            log::error!("capture {} stopped: {e}", sink.path().display());
        }
        self.failure = Some(e);
    }
}

fn since_epoch(at: Instant) -> Duration {
    Duration::from_micros(at.total_micros().max(0) as u64)
}

fn append(text: &mut Option<String>, more: String) {
    if more.is_empty() {
        return;
    }
    match text {
        Some(t) => {
            t.push_str("; ");
            t.push_str(&more);
        }
        None => *text = Some(more),
    }
}

/// What an inbound packet told the stack, held back with the packet (see
/// [`Tap::withhold_inbound`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Withheld {
    observed: Option<Observed>,
    last_inbound: Option<(FourTuple, bool)>,
    /// The packet waiting in the capture's queue, if it is there.
    serial: Option<u64>,
}

/// Observes every packet in both directions and, with a sink, records it.
pub struct Tap<D> {
    inner: D,
    state: RefCell<TapState>,
}

impl<D> Tap<D> {
    pub fn new(inner: D, sink: Option<PcapngSink>) -> Self {
        Tap {
            inner,
            state: RefCell::new(TapState {
                tracker: Tracker::new(),
                observed: Vec::with_capacity(64),
                sink,
                pending: Vec::new(),
                used: 0,
                serials: 0,
                carried: Vec::new(),
                failure: None,
                last_sync: Instant::ZERO,
                synced_packets: 0,
                synced_chunks: 0,
                last_inbound: None,
                dns_port: None,
                keylog: None,
            }),
        }
    }

    pub fn inner(&self) -> &D {
        &self.inner
    }

    pub fn inner_mut(&mut self) -> &mut D {
        &mut self.inner
    }

    /// Also write TLS secrets to this file, in the SSLKEYLOGFILE format (`--keylog`).
    pub fn set_keylog_file(&mut self, file: std::fs::File) {
        self.state.get_mut().keylog = Some(file);
    }

    /// Records TLS key log lines: into the capture (a Decryption Secrets Block, ahead of
    /// the packets still held, so a reader has the secrets before the records they open:
    /// a client learns its handshake secrets from the ServerHello it holds) and the
    /// `--keylog` file.
    pub fn write_secrets(&mut self, lines: &[String]) {
        let state = self.state.get_mut();
        let mut text = lines.join("\n");
        text.push('\n');
        if let Some(file) = state.keylog.as_mut()
            && let Err(e) = std::io::Write::write_all(file, text.as_bytes())
        {
            log::warn!("--keylog: cannot write: {e}");
        }
        if let Some(sink) = state.sink.as_mut()
            && let Err(e) = sink.write_secrets(&text)
        {
            state.fail(e);
        }
    }

    /// Records a packet the stack sent that a layer above kept off the wire (the fault
    /// injector's losses): the capture shows it, with `remark` saying what happened.
    pub fn record_unsent(&mut self, at: Instant, packet: &[u8], remark: String) {
        self.state
            .get_mut()
            .record(Direction::Out, at, packet, Some(remark));
    }

    /// Takes back what the inbound packet just recorded told the stack, because a layer
    /// above holds it: the stack learns of it when it is delivered, and the packet waits
    /// in the capture's queue until then, for the notes of what it causes.
    pub fn withhold_inbound(&mut self) -> Withheld {
        let state = self.state.get_mut();
        let mut withheld = Self::forget(state);
        if let Some(p) = state.pending[..state.used].last_mut()
            && p.dir == Direction::In
        {
            p.deferred = true;
            withheld.serial = Some(p.serial);
        }
        withheld
    }

    /// Takes back what the inbound packet just recorded told the stack, because a layer
    /// above drops it: the stack never sees it.
    pub fn forget_inbound(&mut self) {
        Self::forget(self.state.get_mut());
    }

    fn forget(state: &mut TapState) -> Withheld {
        let last_inbound = state.last_inbound.take();
        let observed = match state.observed.last() {
            Some(o) if o.dir == Direction::In && Some(o.tuple()) == last_inbound.map(|l| l.0) => {
                state.observed.pop()
            }
            _ => None,
        };
        Withheld {
            observed,
            last_inbound,
            serial: None,
        }
    }

    /// Gives the stack what a held inbound packet tells it, now that it is delivered.
    pub fn release_inbound(&mut self, withheld: Withheld) {
        let state = self.state.get_mut();
        state.observed.extend(withheld.observed);
        state.last_inbound = withheld.last_inbound;
        if let Some(p) = state.pending[..state.used]
            .iter_mut()
            .find(|p| Some(p.serial) == withheld.serial)
        {
            p.deferred = false;
        }
    }

    /// Which UDP port carries DNS, for comments on DNS packets.
    pub fn set_dns_port(&mut self, port: Option<u16>) {
        self.state.get_mut().dns_port = port;
    }

    /// Moves the segments observed since the last call into `out` (which is cleared first).
    /// Swapping the two vectors keeps both allocations alive across calls.
    pub fn take_observed(&mut self, out: &mut Vec<Observed>) {
        out.clear();
        std::mem::swap(out, &mut self.state.get_mut().observed);
    }

    /// The connection of the inbound segment read since the last call (and whether it
    /// was a SYN), if it was TCP.
    pub fn take_last_inbound(&mut self) -> Option<(FourTuple, bool)> {
        self.state.get_mut().last_inbound.take()
    }

    /// Attaches the stack's notes, and empties `notes`: a note on an inbound segment goes
    /// on the latest held inbound packet of its connection (the one just processed);
    /// one for our next SYN, FIN or RST is kept until that segment is recorded.
    pub fn annotate(&mut self, notes: &mut Vec<Note>) {
        let state = self.state.get_mut();
        if state.sink.is_none() {
            notes.clear();
            return;
        }
        for note in notes.drain(..) {
            match note.attach {
                Attach::NextControl => {
                    if state.carried.len() == MAX_CARRIED_NOTES {
                        state.carried.remove(0);
                    }
                    state.carried.push(note);
                }
                Attach::Inbound => {
                    let held = state.pending[..state.used].iter_mut().rev().find(|p| {
                        p.dir == Direction::In
                            && p.observed.is_some_and(|o| o.tuple() == note.tuple)
                    });
                    if let Some(p) = held {
                        append(&mut p.remark, note.text);
                    }
                }
            }
        }
    }

    /// Writes the held packets, with what [`annotate`](Self::annotate) attached.
    pub fn flush(&mut self) {
        let state = self.state.get_mut();
        if state.sink.is_none() {
            state.used = 0;
            return;
        }
        state.write_pending();
    }

    /// Writes what is held and pushes the file to disk; returns the path and the number of
    /// packets written, if a capture is on.
    pub fn finish(&mut self) -> io::Result<Option<(std::path::PathBuf, u64)>> {
        let state = self.state.get_mut();
        let all = state.used;
        state.write_pending_up_to(all);
        if let Some(e) = state.failure.take() {
            return Err(e);
        }
        match state.sink.as_mut() {
            Some(sink) => {
                sink.finish()?;
                Ok(Some((sink.path().to_owned(), sink.packets())))
            }
            None => Ok(None),
        }
    }

    /// When the file should next catch up with the capture: [`SYNC_INTERVAL`] after the
    /// file last moved, if anything was captured since. The stack wakes up for it.
    pub fn sync_deadline(&self) -> Option<Instant> {
        let state = self.state.borrow();
        let sink = state.sink.as_ref()?;
        (sink.packets() != state.synced_packets).then(|| state.last_sync + SYNC_INTERVAL)
    }

    /// Lets the file catch up with what is captured, once the capture has been quiet for
    /// [`SYNC_INTERVAL`]. Called on every turn of the loop. While chunks flow to the
    /// writer the file is catching up anyway, and a sync (which rewrites the partial last
    /// block through the page cache) would only slow a transfer down.
    pub fn idle(&mut self, now: Instant) {
        let state = self.state.get_mut();
        let Some(sink) = state.sink.as_mut() else {
            return;
        };
        if sink.chunks_sent() != state.synced_chunks {
            state.synced_chunks = sink.chunks_sent();
            state.last_sync = now;
            return;
        }
        if sink.packets() == state.synced_packets || now < state.last_sync + SYNC_INTERVAL {
            return;
        }
        state.last_sync = now;
        state.synced_packets = sink.packets();
        if let Err(e) = sink.flush() {
            state.fail(e);
        }
    }
}

impl<D: Device> Device for Tap<D> {
    type RxToken<'a>
        = TapRx<'a, D::RxToken<'a>>
    where
        Self: 'a;
    type TxToken<'a>
        = TapTx<'a, D::TxToken<'a>>
    where
        Self: 'a;

    fn receive(&mut self, timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let (rx, tx) = self.inner.receive(timestamp)?;
        let state = &self.state;
        Some((
            TapRx {
                inner: rx,
                state,
                timestamp,
            },
            TapTx {
                inner: tx,
                state,
                timestamp,
                remark: None,
            },
        ))
    }

    fn transmit(&mut self, timestamp: Instant) -> Option<Self::TxToken<'_>> {
        let tx = self.inner.transmit(timestamp)?;
        Some(TapTx {
            inner: tx,
            state: &self.state,
            timestamp,
            remark: None,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.inner.capabilities()
    }
}

impl<D: Link> Link for Tap<D> {
    fn wait(&mut self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        self.inner.wait(timeout)
    }
    fn take_error(&mut self) -> Option<DeviceError> {
        self.inner.take_error()
    }
    fn counters(&self) -> DeviceCounters {
        self.inner.counters()
    }
}

pub struct TapRx<'a, T> {
    inner: T,
    state: &'a RefCell<TapState>,
    timestamp: Instant,
}

impl<T: phy::RxToken> TapRx<'_, T> {
    /// Reads the packet with `f`, which also says what the layer above will do with it;
    /// that goes into the packet's comment.
    pub fn consume_remarked<R>(self, f: impl FnOnce(&[u8]) -> (R, Option<String>)) -> R {
        let (state, timestamp) = (self.state, self.timestamp);
        self.inner.consume(|packet| {
            let (result, remark) = f(packet);
            state
                .borrow_mut()
                .record(Direction::In, timestamp, packet, remark);
            result
        })
    }
}

impl<T: phy::RxToken> phy::RxToken for TapRx<'_, T> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let (state, timestamp) = (self.state, self.timestamp);
        self.inner.consume(|packet| {
            state
                .borrow_mut()
                .record(Direction::In, timestamp, packet, None);
            f(packet)
        })
    }
}

pub struct TapTx<'a, T> {
    inner: T,
    state: &'a RefCell<TapState>,
    timestamp: Instant,
    remark: Option<String>,
}

impl<T> TapTx<'_, T> {
    /// Says in the packet's comment what the layer above did to it.
    pub fn with_remark(mut self, remark: String) -> Self {
        self.remark = Some(remark);
        self
    }
}

impl<T: phy::TxToken> phy::TxToken for TapTx<'_, T> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let (state, timestamp, remark) = (self.state, self.timestamp, self.remark);
        self.inner.consume(len, |packet| {
            let result = f(packet);
            state
                .borrow_mut()
                .record(Direction::Out, timestamp, packet, remark);
            result
        })
    }
}

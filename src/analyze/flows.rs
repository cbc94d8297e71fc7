//! From frames to conversations: TCP connections with every segment's relative numbers
//! and analysis tags, and DNS exchanges. The tags are computed from the packets alone,
//! the way Wireshark's TCP analysis does, so they mean the same on any capture.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::time::Duration;

use serde::Serialize;

use super::app::{self, Protocol};
use super::notes::{self, Sender};
use super::packet;
use super::read::Frame;
use crate::observe::{Segment, SynOptions};

/// A segment whose sequence space was already covered, seen less than one round trip after
/// the newest segment, is taken as reordered rather than retransmitted: the round trip
/// of the handshake as the capture saw it (SYN to the ACK of the SYN-ACK), or this long
/// when the capture missed the handshake. Wireshark decides the same way, so the counts
/// of retransmissions agree.
const OUT_OF_ORDER_WINDOW: Duration = Duration::from_millis(3);

/// Duplicate ACKs before a retransmission counts as a fast retransmission (RFC 5681
/// §3.2 waits for three; Wireshark names it from two).
const FAST_RETRANSMIT_DUP_ACKS: u32 = 2;

/// What the analysis found about a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tag {
    Retransmission,
    FastRetransmission,
    /// A retransmission of what the receiver had already acknowledged.
    SpuriousRetransmission,
    /// The n-th duplicate of the previous ACK.
    DuplicateAck(u32),
    OutOfOrder,
    ZeroWindow,
    WindowUpdate,
    KeepAlive,
    /// The ACK of the last FIN: its sender now waits in TIME-WAIT (RFC 9293 §3.6).
    TimeWait,
    /// The capture says the link dropped it (synack's `fault: lost` comment).
    Lost,
    /// Retransmitted later, starting exactly where the receiver's ACKs were stuck, and
    /// never acknowledged before that: lost, or its ACK was (the capture cannot tell).
    /// Only guessed for connections whose capture does not say what was lost.
    ProbablyLost,
}

impl Tag {
    pub fn text(self) -> String {
        match self {
            Tag::Retransmission => "retransmission".into(),
            Tag::FastRetransmission => "fast retransmission".into(),
            Tag::SpuriousRetransmission => "spurious retransmission".into(),
            Tag::DuplicateAck(n) => format!("duplicate ACK #{n}"),
            Tag::OutOfOrder => "out-of-order".into(),
            Tag::ZeroWindow => "zero window".into(),
            Tag::WindowUpdate => "window update".into(),
            Tag::KeepAlive => "keep-alive".into(),
            Tag::TimeWait => "sender enters TIME-WAIT".into(),
            Tag::Lost => "lost".into(),
            Tag::ProbablyLost => "probably lost".into(),
        }
    }
}

/// One TCP segment as the ladder and the statistics see it.
#[derive(Debug, Clone, Serialize)]
pub struct Seg {
    pub frame: usize,
    /// Seconds since the capture's first frame.
    pub time: f64,
    pub from_client: bool,
    pub syn: bool,
    pub ack_flag: bool,
    pub fin: bool,
    pub rst: bool,
    pub psh: bool,
    /// Relative to each side's ISN, as Wireshark shows them.
    pub seq: u32,
    pub ack: u32,
    pub len: u32,
    /// The window as advertised, scaled when both SYNs offered window scaling.
    pub window: u64,
    pub options: SynOptions,
    pub tags: Vec<Tag>,
    pub comment: Option<String>,
    /// The capture holds only the start of this packet (its snap length); `len` is
    /// still its length on the wire, from the IP header.
    pub cut: bool,
    /// What it carries for the application: TLS records and handshake messages, or an
    /// HTTP request or status line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The sender's state, when the comment gives it (synack's `--internals on`); boxed,
    /// as most segments of most captures have none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender: Option<Box<Sender>>,
}

impl Seg {
    pub fn flags(&self) -> String {
        let mut f = Vec::new();
        for (on, name) in [
            (self.syn, "SYN"),
            (self.fin, "FIN"),
            (self.rst, "RST"),
            (self.psh, "PSH"),
            (self.ack_flag, "ACK"),
        ] {
            if on {
                f.push(name);
            }
        }
        f.join(",")
    }

    fn seq_len(&self) -> u32 {
        self.len + u32::from(self.syn) + u32::from(self.fin)
    }

    pub fn retransmitted(&self) -> bool {
        self.tags.iter().any(|t| {
            matches!(
                t,
                Tag::Retransmission | Tag::FastRetransmission | Tag::SpuriousRetransmission
            )
        })
    }

    pub fn lost(&self) -> bool {
        self.tags
            .iter()
            .any(|t| matches!(t, Tag::Lost | Tag::ProbablyLost))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Connection {
    pub client: SocketAddrV4,
    pub server: SocketAddrV4,
    pub segments: Vec<Seg>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DnsExchange {
    pub client: SocketAddrV4,
    pub server: SocketAddrV4,
    /// (frame, seconds, what the message says) of the query and the answer.
    pub messages: Vec<(usize, f64, bool, String)>,
}

/// A conversation in the capture, in order of its first frame.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Conversation {
    Tcp(Connection),
    Dns(DnsExchange),
}

/// One side's sequence space, for the tags.
#[derive(Default)]
struct Side {
    isn: Option<u32>,
    /// The highest relative sequence number sent (exclusive).
    max_end: u32,
    max_end_time: Duration,
    /// When this side last sent a SYN (a retransmitted SYN restarts the handshake's clock).
    syn_time: Option<Duration>,
    /// The handshake's round trip as the capture saw it, once it completed.
    handshake_rtt: Option<Duration>,
    /// First sendings of data not yet acknowledged, in the order sent (so in sequence
    /// order): (start, end, index of the segment in the connection). An ACK takes what it
    /// covers from the front; what is left is bounded by what is in flight.
    unacked: std::collections::VecDeque<(u32, u32, usize)>,
    /// The application data this side sends, as it is read.
    app: app::Reader,
    wscale: Option<u8>,
    last_ack: Option<(u32, u64)>,
    dup_acks: u32,
    /// Where this side's FIN ends in its sequence space, and when it was first seen.
    fin_end: Option<u32>,
    fin_time: Option<Duration>,
    /// This side sent the ACK that put it in TIME-WAIT.
    time_wait: bool,
}

/// Groups the frames into conversations and analyses each segment.
pub fn conversations(frames: &[Frame]) -> Vec<Conversation> {
    let start = frames.first().map(|f| f.time).unwrap_or_default();
    let mut order: Vec<Conversation> = Vec::new();
    let mut tcp: HashMap<(SocketAddrV4, SocketAddrV4), (usize, [Side; 2], Protocol)> =
        HashMap::new();
    let mut dns: HashMap<(SocketAddrV4, SocketAddrV4, u16), usize> = HashMap::new();
    for frame in frames {
        let t = frame.time.saturating_sub(start);
        if let Some(p) = packet::tcp(&frame.ip, frame.ip_len) {
            let s = &p.seg;
            let key = if s.src < s.dst {
                (s.src, s.dst)
            } else {
                (s.dst, s.src)
            };
            let (idx, sides, protocol) = tcp.entry(key).or_insert_with(|| {
                // The client is whoever sent the first SYN; failing that, the first sender.
                let (client, server) = if s.syn && s.ack_flag {
                    (s.dst, s.src)
                } else {
                    (s.src, s.dst)
                };
                order.push(Conversation::Tcp(Connection {
                    client,
                    server,
                    segments: Vec::new(),
                }));
                (order.len() - 1, Default::default(), Protocol::Unknown)
            });
            let Conversation::Tcp(conn) = &mut order[*idx] else {
                continue;
            };
            if *protocol == Protocol::Unknown {
                *protocol = app::sniff(p.payload);
            }
            let from_client = s.src == conn.client;
            let mut seg = analyse(&p, from_client, sides, t, frame, &mut conn.segments);
            let me = &mut sides[usize::from(!from_client)];
            let new = !seg.retransmitted();
            seg.app = me.app.label(*protocol, seg.seq, seg.len, p.payload, new);
            conn.segments.push(seg);
            continue;
        }
        if let Some((src, dst, payload)) = packet::udp53(&frame.ip, frame.ip_len) {
            let query = dst.port() == 53;
            let (client, server) = if query { (src, dst) } else { (dst, src) };
            let id = u16::from_be_bytes([payload[0], payload[1]]);
            let idx = *dns.entry((client, server, id)).or_insert_with(|| {
                order.push(Conversation::Dns(DnsExchange {
                    client,
                    server,
                    messages: Vec::new(),
                }));
                order.len() - 1
            });
            if let Conversation::Dns(x) = &mut order[idx] {
                let text = crate::dns::describe(payload);
                x.messages
                    .push((frame.number, t.as_secs_f64(), query, text));
            }
        }
    }
    // A capture that says what the link lost is not second-guessed.
    for c in &mut order {
        if let Conversation::Tcp(c) = c
            && c.segments.iter().any(|s| s.tags.contains(&Tag::Lost))
        {
            for s in &mut c.segments {
                s.tags.retain(|t| *t != Tag::ProbablyLost);
            }
        }
    }
    order
}

/// The segment `p` with its relative numbers and tags; `earlier` are the connection's
/// segments so far (the first sending of a segment found lost is tagged there).
fn analyse(
    p: &packet::Tcp,
    from_client: bool,
    sides: &mut [Side; 2],
    t: Duration,
    frame: &Frame,
    earlier: &mut [Seg],
) -> Seg {
    let s: &Segment = &p.seg;
    let (me, other) = if from_client { (0, 1) } else { (1, 0) };
    if s.syn {
        sides[me].isn = Some(s.seq);
        sides[me].wscale = s.options.window_scale;
        if !s.ack_flag {
            sides[me].syn_time = Some(t);
        }
    } else if s.ack_flag
        && sides[me].handshake_rtt.is_none()
        && let (Some(syn), Some(peer)) = (sides[me].syn_time, sides[other].isn)
        && s.ack == peer.wrapping_add(1)
    {
        // The ACK of the SYN-ACK: the handshake's round trip, SYN to here.
        let rtt = t.saturating_sub(syn);
        sides[me].handshake_rtt = Some(rtt);
        sides[other].handshake_rtt = Some(rtt);
    }
    let isn = *sides[me].isn.get_or_insert(s.seq.wrapping_sub(1));
    let peer_isn = sides[other].isn;
    let rel_seq = s.seq.wrapping_sub(isn);
    let rel_ack = peer_isn.map_or(s.ack, |i| s.ack.wrapping_sub(i));
    // RFC 7323 §2.2: the window in a SYN is never scaled; after it, only if both SYNs
    // carried the option.
    let shift = match (sides[me].wscale, sides[other].wscale) {
        (Some(w), Some(_)) if !s.syn => w.min(14),
        _ => 0,
    };
    let window = u64::from(s.window) << shift;
    let mut seg = Seg {
        frame: frame.number,
        time: t.as_secs_f64(),
        from_client,
        syn: s.syn,
        ack_flag: s.ack_flag,
        fin: s.fin,
        rst: s.rst,
        psh: s.psh,
        seq: rel_seq,
        ack: if s.ack_flag { rel_ack } else { 0 },
        len: s.payload_len,
        window,
        options: s.options,
        tags: Vec::new(),
        comment: frame.comment.clone(),
        cut: p.cut,
        app: None,
        sender: frame
            .comment
            .as_deref()
            .and_then(notes::sender)
            .map(Box::new),
    };
    if frame.comment.as_deref().is_some_and(notes::lost) {
        seg.tags.push(Tag::Lost);
    }
    let seq_len = seg.seq_len();
    let end = rel_seq.wrapping_add(seq_len);
    let (mine, theirs) = if me == 0 {
        let (a, b) = sides.split_at_mut(1);
        (&mut a[0], &mut b[0])
    } else {
        let (a, b) = sides.split_at_mut(1);
        (&mut b[0], &mut a[0])
    };
    if seq_len > 0 && !s.rst {
        let covered = seq_before_eq(end, mine.max_end) && mine.max_end != 0;
        if covered {
            // In this order: a keep-alive is never a retransmission, a segment that
            // answers duplicate ACKs is their fast retransmission however soon it follows,
            // and one the receiver already acknowledged was sent for nothing, however soon
            // (Wireshark decides in the same order, so the counts agree).
            if s.payload_len <= 1
                && !s.syn
                && !s.fin
                && rel_seq.wrapping_add(1) == mine.max_end
                && theirs.last_ack.is_some_and(|(a, _)| a == mine.max_end)
            {
                seg.tags.push(Tag::KeepAlive);
            } else if theirs.dup_acks >= FAST_RETRANSMIT_DUP_ACKS
                && theirs.last_ack.is_some_and(|(a, _)| a == rel_seq)
            {
                // The duplicate ACKs are answered; another copy needs new ones to be fast.
                theirs.dup_acks = 0;
                seg.tags.push(Tag::FastRetransmission);
            } else if theirs.last_ack.is_some_and(|(a, _)| seq_before_eq(end, a)) {
                // Everything in it was acknowledged already.
                seg.tags.push(Tag::SpuriousRetransmission);
            } else if end != mine.max_end
                && t.saturating_sub(mine.max_end_time)
                    < mine.handshake_rtt.unwrap_or(OUT_OF_ORDER_WINDOW)
            {
                seg.tags.push(Tag::OutOfOrder);
            } else {
                seg.tags.push(Tag::Retransmission);
            }
            // The receiver still asks for exactly this: its first sending never got
            // there (or its ACK did not come back).
            if seg.retransmitted()
                && theirs.last_ack.is_some_and(|(a, _)| a == rel_seq)
                && mine.unacked.front().is_some_and(|u| u.0 == rel_seq)
                && let Some((_, _, i)) = mine.unacked.pop_front()
                && let Some(first) = earlier.get_mut(i)
                && !first.lost()
            {
                first.tags.push(Tag::ProbablyLost);
            }
        } else {
            mine.max_end = end;
            mine.max_end_time = t;
            if s.payload_len > 0 {
                mine.unacked.push_back((rel_seq, end, earlier.len()));
            }
        }
        if s.fin && mine.fin_end.is_none() {
            mine.fin_end = Some(end);
            mine.fin_time = Some(t);
        }
    }
    // A keep-alive with no data: one sequence number behind what was sent (RFC 9293
    // §3.8.4), so the peer answers with an ACK.
    if seq_len == 0 && !s.rst && mine.max_end != 0 && rel_seq.wrapping_add(1) == mine.max_end {
        seg.tags.push(Tag::KeepAlive);
    }
    if s.ack_flag && !s.syn && !s.rst {
        if window == 0 {
            seg.tags.push(Tag::ZeroWindow);
        }
        let pure = s.payload_len == 0 && !s.fin;
        match mine.last_ack {
            Some((a, w)) if a == rel_ack && pure => {
                let outstanding = seq_before(rel_ack, theirs.max_end);
                if w == window && outstanding && !seg.tags.contains(&Tag::KeepAlive) {
                    mine.dup_acks += 1;
                    seg.tags.push(Tag::DuplicateAck(mine.dup_acks));
                } else if w != window {
                    seg.tags.push(Tag::WindowUpdate);
                }
            }
            Some((a, _)) if a == rel_ack => {}
            _ => mine.dup_acks = 0,
        }
        mine.last_ack = Some((rel_ack, window));
        // What this ACK covers was not lost.
        while theirs
            .unacked
            .front()
            .is_some_and(|u| seq_before_eq(u.1, rel_ack))
        {
            theirs.unacked.pop_front();
        }
        // The first ACK of the second FIN, from the side whose FIN came first (the active
        // closer, RFC 9293 §3.6): it now waits in TIME-WAIT.
        if pure
            && !mine.time_wait
            && let (Some(my_fin), Some(their_fin)) = (mine.fin_end, theirs.fin_end)
            && mine.fin_time <= theirs.fin_time
            && seq_before_eq(their_fin, rel_ack)
            && seq_before_eq(my_fin, rel_seq)
        {
            mine.time_wait = true;
            seg.tags.push(Tag::TimeWait);
        }
    }
    seg
}

/// `a <= b` in sequence space (RFC 9293 §3.4: modulo 2^32).
fn seq_before_eq(a: u32, b: u32) -> bool {
    b.wrapping_sub(a) < 1 << 31
}

fn seq_before(a: u32, b: u32) -> bool {
    a != b && seq_before_eq(a, b)
}

/// Round-trip times seen from the capture point for the data one side sent: from a data
/// segment passing the capture point to the first ACK that covers it passing back (Karn,
/// RFC 6298 §3: never for data that was retransmitted). That is the path beyond the
/// capture point to the receiver and back, plus the receiver's ACK delay.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rtt {
    pub samples: usize,
    pub min_ms: Option<f64>,
    pub median_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl Rtt {
    fn of(mut ms: Vec<f64>) -> Rtt {
        ms.sort_by(f64::total_cmp);
        Rtt {
            samples: ms.len(),
            min_ms: ms.first().copied(),
            median_ms: ms.get(ms.len() / 2).copied(),
            max_ms: ms.last().copied(),
        }
    }
}

/// What `synack stats` says about a connection.
#[derive(Debug, Clone, Serialize)]
pub struct ConnStats {
    pub client: SocketAddrV4,
    pub server: SocketAddrV4,
    /// SYN to SYN-ACK, SYN-ACK to ACK, and the whole handshake, in ms, as seen at the
    /// capture point.
    pub syn_to_synack_ms: Option<f64>,
    pub synack_to_ack_ms: Option<f64>,
    pub handshake_ms: Option<f64>,
    pub duration_ms: f64,
    /// Client to server, then server to client: payload bytes, each counted once (a
    /// packet the capture cut counts its length on the wire).
    pub bytes: [u64; 2],
    pub segments: [u64; 2],
    /// Payload bytes that were new (not retransmitted) in the busier direction, per
    /// second of the connection.
    pub goodput_bytes_per_s: f64,
    pub retransmissions: [u64; 2],
    pub duplicate_acks: [u64; 2],
    pub min_window: [Option<u64>; 2],
    pub max_window: [Option<u64>; 2],
    /// Segments the capture holds only the start of (its snap length).
    pub cut: [u64; 2],
    /// Segments lost: said by the capture, or probably (see [`Tag::ProbablyLost`]).
    pub lost: [u64; 2],
    /// Per direction of the data: client to server (the path from the capture point to
    /// the server and back), then server to client.
    pub rtt: [Rtt; 2],
    /// Both directions together.
    pub rtt_samples: usize,
    pub rtt_min_ms: Option<f64>,
    pub rtt_median_ms: Option<f64>,
    pub rtt_max_ms: Option<f64>,
}

/// One direction's data segments waiting for the ACK that covers them, for RTT samples.
///
/// Only first sendings of new data are kept, so their ends only grow (in sequence space):
/// an ACK takes what it covers from the front, a retransmission (Karn) drops what it
/// overlaps from the back. Each segment goes in once and comes out once, so a capture
/// of any number of segments that are never acknowledged costs linear time.
#[derive(Default)]
struct Pending {
    /// (end of the segment in sequence space, when it was seen), ends increasing.
    queue: std::collections::VecDeque<(u32, f64)>,
    /// Entries looked at, for the test that the work stays linear.
    steps: u64,
}

impl Pending {
    fn sent(&mut self, end: u32, time: f64) {
        // A segment that does not extend the newest (a keep-alive's byte) gives no sample.
        if self.queue.back().is_none_or(|&(e, _)| seq_before(e, end)) {
            self.queue.push_back((end, time));
        }
    }

    /// A retransmission from `seq`: what it overlaps can no longer be timed.
    fn retransmitted(&mut self, seq: u32) {
        while let Some(&(end, _)) = self.queue.back() {
            self.steps += 1;
            if !seq_before(seq, end) {
                break;
            }
            self.queue.pop_back();
        }
    }

    /// An ACK of everything before `ack` at `time`: the samples it gives, in ms.
    fn acked(&mut self, ack: u32, time: f64, rtts: &mut Vec<f64>) {
        while let Some(&(end, sent)) = self.queue.front() {
            self.steps += 1;
            if !seq_before_eq(end, ack) {
                break;
            }
            rtts.push((time - sent) * 1000.0);
            self.queue.pop_front();
        }
    }
}

pub fn stats(c: &Connection) -> ConnStats {
    stats_counted(c).0
}

/// The statistics, and how many pending entries were looked at to find the RTTs.
fn stats_counted(c: &Connection) -> (ConnStats, u64) {
    let find = |f: &dyn Fn(&Seg) -> bool| c.segments.iter().find(|s| f(s)).map(|s| s.time);
    let syn = find(&|s| s.syn && !s.ack_flag);
    let synack = find(&|s| s.syn && s.ack_flag);
    let ack3 = synack.and_then(|t0| {
        c.segments
            .iter()
            .find(|s| s.from_client && s.ack_flag && !s.syn && s.time >= t0)
            .map(|s| s.time)
    });
    let ms = |a: Option<f64>, b: Option<f64>| Some((b? - a?) * 1000.0);
    let first = c.segments.first().map_or(0.0, |s| s.time);
    let last = c.segments.last().map_or(0.0, |s| s.time);
    let mut st = ConnStats {
        client: c.client,
        server: c.server,
        syn_to_synack_ms: ms(syn, synack),
        synack_to_ack_ms: ms(synack, ack3),
        handshake_ms: ms(syn, ack3),
        duration_ms: (last - first) * 1000.0,
        bytes: [0; 2],
        segments: [0; 2],
        goodput_bytes_per_s: 0.0,
        retransmissions: [0; 2],
        duplicate_acks: [0; 2],
        min_window: [None; 2],
        max_window: [None; 2],
        cut: [0; 2],
        lost: [0; 2],
        rtt: Default::default(),
        rtt_samples: 0,
        rtt_min_ms: None,
        rtt_median_ms: None,
        rtt_max_ms: None,
    };
    let mut pending: [Pending; 2] = Default::default();
    let mut rtts: [Vec<f64>; 2] = Default::default();
    // The sequence space each side's data covered: every byte counted once, whether it
    // went once, twice, or reached the capture late.
    let mut span: [Option<(u32, u32)>; 2] = [None, None];
    for s in &c.segments {
        let d = usize::from(!s.from_client);
        st.segments[d] += 1;
        st.cut[d] += u64::from(s.cut);
        st.lost[d] += u64::from(s.lost());
        if s.retransmitted() {
            st.retransmissions[d] += 1;
            // Karn's rule (RFC 6298 §3): an ACK after a retransmission says nothing
            // about the round trip.
            pending[d].retransmitted(s.seq);
        } else if s.len > 0 && !s.tags.contains(&Tag::OutOfOrder) {
            pending[d].sent(s.seq.wrapping_add(s.seq_len()), s.time);
        }
        if s.len > 0 {
            let (lo, hi) = span[d].get_or_insert((s.seq, s.seq));
            if seq_before(s.seq, *lo) {
                *lo = s.seq;
            }
            let end = s.seq.wrapping_add(s.len);
            if seq_before(*hi, end) {
                *hi = end;
            }
        }
        if s.tags.iter().any(|t| matches!(t, Tag::DuplicateAck(_))) {
            st.duplicate_acks[d] += 1;
        }
        if !s.syn && !s.rst {
            st.min_window[d] = Some(st.min_window[d].map_or(s.window, |w| w.min(s.window)));
            st.max_window[d] = Some(st.max_window[d].map_or(s.window, |w| w.max(s.window)));
        }
        if s.ack_flag {
            pending[1 - d].acked(s.ack, s.time, &mut rtts[1 - d]);
        }
    }
    st.bytes = span.map(|s| s.map_or(0, |(lo, hi)| u64::from(hi.wrapping_sub(lo))));
    let busier = st.bytes[0].max(st.bytes[1]);
    if last > first {
        st.goodput_bytes_per_s = busier as f64 / (last - first);
    }
    let all = Rtt::of(rtts.concat());
    st.rtt = rtts.map(Rtt::of);
    st.rtt_samples = all.samples;
    st.rtt_min_ms = all.min_ms;
    st.rtt_median_ms = all.median_ms;
    st.rtt_max_ms = all.max_ms;
    (st, pending[0].steps + pending[1].steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One TCP segment from `from` (client 10.0.0.1:1000, server 10.0.0.2:80) as a frame.
    fn seg(
        number: usize,
        ms: u64,
        from_client: bool,
        (seq, ack): (u32, u32),
        flags: &str,
        window: u16,
        len: usize,
    ) -> Frame {
        let (src, dst, sp, dp) = if from_client {
            ([10, 0, 0, 1], [10, 0, 0, 2], 1000, 80)
        } else {
            ([10, 0, 0, 2], [10, 0, 0, 1], 80, 1000)
        };
        let mut b = etherparse::PacketBuilder::ipv4(src, dst, 64).tcp(sp, dp, seq, window);
        if flags.contains('S') {
            b = b.syn();
        }
        if flags.contains('A') {
            b = b.ack(ack);
        }
        if flags.contains('F') {
            b = b.fin();
        }
        let payload = vec![b'x'; len];
        let mut ip = Vec::new();
        b.write(&mut ip, &payload).unwrap();
        Frame {
            number,
            time: Duration::from_millis(ms),
            ip_len: ip.len(),
            ip,
            comment: None,
            inbound: None,
        }
    }

    fn tags(frames: &[Frame]) -> Vec<Vec<Tag>> {
        let convs = conversations(frames);
        let Conversation::Tcp(c) = &convs[0] else {
            panic!("a TCP connection")
        };
        c.segments.iter().map(|s| s.tags.clone()).collect()
    }

    #[test]
    fn zero_window_keep_alive_and_window_update_are_tagged() {
        let frames = [
            seg(1, 0, true, (100, 0), "S", 65535, 0),
            seg(2, 1, false, (500, 101), "SA", 65535, 0),
            seg(3, 2, true, (101, 501), "A", 65535, 0),
            seg(4, 3, false, (501, 101), "A", 65535, 1000),
            // The client's buffer is full: zero window, then it opens again.
            seg(5, 4, true, (101, 1501), "A", 0, 0),
            seg(6, 9, true, (101, 1501), "A", 8192, 0),
            // Idle; the server probes one byte behind what it sent.
            seg(7, 7000, false, (1500, 101), "A", 65535, 0),
        ];
        let t = tags(&frames);
        assert_eq!(t[4], [Tag::ZeroWindow]);
        assert_eq!(t[5], [Tag::WindowUpdate]);
        assert_eq!(t[6], [Tag::KeepAlive]);
        assert!(t[..4].iter().all(Vec::is_empty), "{t:?}");
    }

    #[test]
    fn retransmissions_duplicate_acks_and_the_time_wait_ack() {
        let frames = [
            seg(1, 0, true, (100, 0), "S", 65535, 0),
            seg(2, 1, false, (500, 101), "SA", 65535, 0),
            seg(3, 2, true, (101, 501), "A", 65535, 0),
            seg(4, 3, false, (501, 101), "A", 65535, 100),
            // 601..701 is lost before the capture point; 701.. arrive.
            seg(5, 4, false, (701, 101), "A", 65535, 100),
            seg(6, 5, true, (101, 601), "A", 65535, 0),
            seg(7, 6, true, (101, 601), "A", 65535, 0),
            seg(8, 7, true, (101, 601), "A", 65535, 0),
            seg(9, 8, false, (601, 101), "A", 65535, 100),
            // The same segment once more, long after: a plain retransmission.
            seg(10, 300, false, (601, 101), "A", 65535, 100),
            seg(11, 301, true, (101, 801), "AF", 65535, 0),
            seg(12, 302, false, (801, 102), "AF", 65535, 0),
            seg(13, 303, true, (102, 802), "A", 65535, 0),
        ];
        let t = tags(&frames);
        assert_eq!(t[6], [Tag::DuplicateAck(1)]);
        assert_eq!(t[7], [Tag::DuplicateAck(2)]);
        assert_eq!(t[8], [Tag::FastRetransmission]);
        assert_eq!(t[9], [Tag::Retransmission]);
        assert_eq!(
            t[12],
            [Tag::TimeWait],
            "the client closed first: its last ACK"
        );
        let Conversation::Tcp(c) = &conversations(&frames)[0] else {
            unreachable!()
        };
        let st = stats(c);
        assert_eq!(st.bytes, [0, 300], "each byte once");
        assert_eq!(st.retransmissions, [0, 2]);
        assert_eq!(st.duplicate_acks, [2, 0]);
        assert_eq!(st.handshake_ms, Some(2.0));
    }

    #[test]
    fn reordering_is_judged_by_the_handshakes_round_trip() {
        // A handshake of 20 ms as the capture saw it (SYN to the ACK of the SYN-ACK).
        let frames = [
            seg(1, 0, true, (100, 0), "S", 65535, 0),
            seg(2, 10, false, (500, 101), "SA", 65535, 0),
            seg(3, 20, true, (101, 501), "A", 65535, 0),
            seg(4, 30, false, (501, 101), "A", 65535, 100),
            seg(5, 30, false, (701, 101), "A", 65535, 100),
            // 601.. turns up 15 ms after the newest segment: within a round trip, reordered.
            seg(6, 45, false, (601, 101), "A", 65535, 100),
            seg(7, 50, true, (101, 801), "A", 65535, 0),
            // The same again after the ACK that covers it: sent for nothing.
            seg(8, 60, false, (601, 101), "A", 65535, 100),
            // New data, then an old segment 25 ms later, past the round trip.
            seg(9, 70, false, (801, 101), "A", 65535, 100),
            seg(10, 95, false, (801, 101), "A", 65535, 100),
        ];
        let t = tags(&frames);
        assert_eq!(t[5], [Tag::OutOfOrder]);
        assert_eq!(t[7], [Tag::SpuriousRetransmission]);
        assert_eq!(t[9], [Tag::Retransmission]);
        let Conversation::Tcp(c) = &conversations(&frames)[0] else {
            unreachable!()
        };
        assert_eq!(stats(c).retransmissions, [0, 2]);
    }

    #[test]
    fn a_segment_retransmitted_where_the_acks_were_stuck_is_probably_lost() {
        let mut frames = vec![
            seg(1, 0, true, (100, 0), "S", 65535, 0),
            seg(2, 1, false, (500, 101), "SA", 65535, 0),
            seg(3, 2, true, (101, 501), "A", 65535, 0),
            seg(4, 3, false, (501, 101), "A", 65535, 100),
            seg(5, 3, false, (601, 101), "A", 65535, 100),
            seg(6, 5, true, (101, 601), "A", 65535, 0),
            // 601..701 never acknowledged; after the RTO it goes again.
            seg(7, 1005, false, (601, 101), "A", 65535, 100),
            seg(8, 1007, true, (101, 701), "A", 65535, 0),
        ];
        let t = tags(&frames);
        assert_eq!(t[4], [Tag::ProbablyLost]);
        assert_eq!(t[6], [Tag::Retransmission]);
        assert!(t[3].is_empty(), "acknowledged: not lost");
        // A capture that says what it lost is not second-guessed.
        frames[3].comment = Some("fault: lost (--loss)".into());
        let t = tags(&frames);
        assert_eq!(t[3], [Tag::Lost]);
        assert!(t[4].is_empty(), "{t:?}");
        let Conversation::Tcp(c) = &conversations(&frames)[0] else {
            unreachable!()
        };
        assert_eq!(stats(c).lost, [0, 1]);
    }

    #[test]
    fn what_the_payload_carries_is_named() {
        let mut frames = vec![
            seg(1, 0, true, (100, 0), "S", 65535, 0),
            seg(2, 1, false, (500, 101), "SA", 65535, 0),
            seg(3, 2, true, (101, 501), "A", 65535, 0),
        ];
        let data = |number, from_client, (seq, ack), payload: &[u8]| {
            let mut f = seg(number, 3, from_client, (seq, ack), "A", 65535, 0);
            let mut ip = Vec::new();
            let (src, dst, sp, dp) = if from_client {
                ([10, 0, 0, 1], [10, 0, 0, 2], 1000, 80)
            } else {
                ([10, 0, 0, 2], [10, 0, 0, 1], 80, 1000)
            };
            etherparse::PacketBuilder::ipv4(src, dst, 64)
                .tcp(sp, dp, seq, 65535)
                .ack(ack)
                .write(&mut ip, payload)
                .unwrap();
            f.ip_len = ip.len();
            f.ip = ip;
            f
        };
        frames.push(data(
            4,
            true,
            (101, 501),
            b"GET /index.html HTTP/1.1\r\n\r\n",
        ));
        frames.push(data(
            5,
            false,
            (501, 130),
            b"HTTP/1.1 404 Not Found\r\n\r\n",
        ));
        let convs = conversations(&frames);
        let Conversation::Tcp(c) = &convs[0] else {
            unreachable!()
        };
        assert_eq!(c.segments[3].app.as_deref(), Some("GET /index.html"));
        assert_eq!(c.segments[4].app.as_deref(), Some("404 Not Found"));
        assert_eq!(c.segments[2].app, None);
    }

    /// A capture of 200 000 data segments that are never acknowledged, and as many ACKs
    /// that acknowledge nothing new (issue 11: `stats` took 5.4 s on one such capture):
    /// the RTT bookkeeping looks at each segment a bounded number of times.
    #[test]
    fn stats_work_is_linear_in_segments_never_acknowledged() {
        const N: u32 = 200_000;
        let client = "10.0.0.1:1000".parse().unwrap();
        let server = "10.0.0.2:80".parse().unwrap();
        let one = |from_client: bool, seq: u32, ack: u32, len: u32, time: f64| Seg {
            frame: 0,
            time,
            from_client,
            syn: false,
            ack_flag: true,
            fin: false,
            rst: false,
            psh: false,
            seq,
            ack,
            len,
            window: 65535,
            options: SynOptions::default(),
            tags: Vec::new(),
            comment: None,
            cut: false,
            app: None,
            sender: None,
        };
        let mut segments = Vec::with_capacity(2 * N as usize + 2);
        for i in 0..N {
            let t = f64::from(i) * 1e-4;
            segments.push(one(false, 1 + i * 100, 1, 100, t));
            // The receiver keeps asking for the first byte.
            segments.push(one(true, 1, 1, 0, t + 5e-5));
        }
        // In the end the first half is acknowledged: those are the samples.
        segments.push(one(true, 1, 1 + (N / 2) * 100, 0, 30.0));
        let c = Connection {
            client,
            server,
            segments,
        };
        let (st, steps) = stats_counted(&c);
        assert_eq!(st.bytes, [0, u64::from(N) * 100]);
        assert_eq!(st.rtt[1].samples, N as usize / 2);
        assert_eq!(st.rtt[0].samples, 0);
        // Each ACK looks at the front once, each sample once more: about 2.5 N here; a
        // scan of everything pending per ACK would be N^2 / 2 = 2e10.
        assert!(steps <= 3 * u64::from(N), "{steps} steps for {N} segments");
    }
}

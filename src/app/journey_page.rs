//! `GET /journey` for a browser: this connection's journey as an HTML page, with its
//! ladder diagram ([`super::ladder_svg`]), its timeline in words, and the commands that
//! show the same connection in the capture. Whoever asks for HTML gets it; everyone else
//! (curl's `*/*`) the JSON as before.
//!
//! Paths, headers, SNI and reasons come from the peer: every text from the record goes
//! through [`escape`], and the page forbids scripts with its Content-Security-Policy.

use std::fmt::Write as _;

use crate::http::{Request, Response};
use crate::journey::ConnRecord;
use crate::journey::render::describe;

/// No scripts, no fetches, nothing from elsewhere: only the page's own inline style.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'";

const STYLE: &str = "body { font: 16px/1.5 system-ui, sans-serif; max-width: 58em; margin: 2em auto; padding: 0 1em; color: #222; }
code, pre, td.t, td.s { font: 14px ui-monospace, monospace; }
code, pre { background: #f4f4f4; padding: 0 .2em; }
pre { padding: .6em; overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
td { padding: .15em .6em; vertical-align: top; border-bottom: 1px solid #eee; }
td.t { text-align: right; white-space: nowrap; color: #57606a; }
td.s { white-space: nowrap; }
.facts td:first-child { color: #57606a; white-space: nowrap; }
svg { max-width: 100%; height: auto; }";

/// Text made safe to put in HTML, between tags or inside a quoted attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Whether the client would rather have HTML than JSON (RFC 9110 §12.5.1): `text/html`
/// (or XHTML) named with a higher weight than whatever range covers `application/json`.
/// Browsers list `text/html` first; curl's `*/*` names no HTML and gets JSON.
pub fn prefers_html(req: &Request) -> bool {
    let mut html: f32 = 0.0;
    // The most specific range that covers JSON decides its weight.
    let mut json: (u8, f32) = (0, 0.0);
    let ranges = req
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("accept"))
        .flat_map(|(_, v)| v.split(','));
    for range in ranges {
        let mut params = range.split(';');
        let media = params.next().unwrap_or_default().trim();
        let q = params
            .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0)
            .clamp(0.0, 1.0);
        let specificity = if media.eq_ignore_ascii_case("application/json") {
            3
        } else if media.eq_ignore_ascii_case("application/*") {
            2
        } else if media == "*/*" {
            1
        } else {
            0
        };
        if specificity > json.0 {
            json = (specificity, q);
        }
        if media.eq_ignore_ascii_case("text/html")
            || media.eq_ignore_ascii_case("application/xhtml+xml")
        {
            html = html.max(q);
        }
    }
    html > 0.0 && html > json.1
}

/// The page for `rec` (or one saying there is no record).
pub fn response(rec: Option<&ConnRecord>) -> Response {
    Response::html(200, page(rec)).with_header("Content-Security-Policy", CSP)
}

fn page(rec: Option<&ConnRecord>) -> String {
    let mut s = String::new();
    let title = rec.map_or_else(
        || "synack: no journey".to_owned(),
        |r| format!("synack: the journey of connection #{}", r.id),
    );
    let _ = write!(
        s,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>\n{STYLE}\n</style>\n</head>\n<body>\n",
        escape(&title)
    );
    match rec {
        Some(rec) => body(&mut s, rec),
        None => s.push_str("<h1>No journey</h1>\n<p>This connection has no journey record.</p>\n"),
    }
    s.push_str("<p><a href=\"/\">The journey of a request</a>, explained.</p>\n</body>\n</html>\n");
    s
}

fn body(s: &mut String, rec: &ConnRecord) {
    let start = rec.events.first().map_or(rec.opened_us, |e| e.t_us);
    let (client, server) = if rec.active {
        (rec.local, rec.remote)
    } else {
        (rec.remote, rec.local)
    };
    let (y, mo, d, h, mi, sec) =
        crate::clock::civil_from_unix((rec.opened_us / 1_000_000).max(0) as u64);
    let _ = write!(
        s,
        "<h1>Connection #{id}</h1>\n<p>This page is the journey of the connection that asked for it, so far: from the client's SYN to this very request.</p>\n<table class=\"facts\">\n<tr><td>client</td><td><code>{client}</code></td></tr>\n<tr><td>server</td><td><code>{server}</code></td></tr>\n<tr><td>opened</td><td>{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{sec:02} UTC</td></tr>\n<tr><td>so far</td><td>{requests} request{plural} answered, {bytes_in} B in, {bytes_out} B out</td></tr>\n",
        id = rec.id,
        requests = rec.requests,
        plural = if rec.requests == 1 { "" } else { "s" },
        bytes_in = rec.bytes_in,
        bytes_out = rec.bytes_out,
    );
    if let (Some(c), Some(sv)) = (rec.handshake.client_isn, rec.handshake.server_isn) {
        let _ = writeln!(
            s,
            "<tr><td>ISNs</td><td>client {c}, server {sv} (the ladder counts from them)</td></tr>"
        );
    }
    let stages = rec
        .stages
        .iter()
        .map(|(stage, t)| format!("{} +{:.3}", stage.name(), (t - start) as f64 / 1000.0))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = write!(
        s,
        "<tr><td>stages</td><td>{} (ms)</td></tr>\n</table>\n",
        escape(&stages)
    );

    s.push_str("<h2>Ladder</h2>\n<p>Time runs down the page. Each arrow is a segment or message between the two ends; our side's TCP state changes are on the right.</p>\n");
    s.push_str(&super::ladder_svg::ladder(rec));

    s.push_str("<h2>Timeline</h2>\n<table>\n");
    for e in &rec.events {
        let _ = writeln!(
            s,
            "<tr><td class=\"t\">{:+.3} ms</td><td class=\"s\">{}</td><td>{}</td></tr>",
            (e.t_us - start) as f64 / 1000.0,
            e.stage.name(),
            escape(&describe(&e.what))
        );
    }
    if rec.events_dropped > 0 {
        let _ = writeln!(
            s,
            "<tr><td></td><td></td><td>... and {} more events not kept</td></tr>",
            rec.events_dropped
        );
    }
    s.push_str("</table>\n");

    let port = client.port();
    let _ = write!(
        s,
        "<h2>The capture</h2>\n<p>Every packet of this connection is in the capture synack writes (<code>--capture</code>; by default <code>captures/serve-&lt;time&gt;.pcapng</code>), each one commented. To see this connection there:</p>\n<pre>synack ladder &lt;capture&gt;                  # every connection as a ladder, with the capture's comments\nsynack stats &lt;capture&gt; --plot out.svg    # round trips, retransmissions, windows; a time-sequence graph\nwireshark -r &lt;capture&gt; -Y 'tcp.port == {port}'\ntshark -r &lt;capture&gt; -Y 'tcp.port == {port}'</pre>\n<p>Over HTTPS the capture carries the TLS secrets: Wireshark shows the requests decrypted. The same journey as JSON: <code>curl -H 'Accept: application/json'</code> this address.</p>\n"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Body, Version};
    use crate::journey::{Journal, Stage, What};

    fn get(accept: &[&str]) -> Request {
        Request {
            method: "GET".into(),
            target: "/journey".into(),
            version: Version::Http11,
            headers: accept
                .iter()
                .map(|a| ("Accept".to_owned(), (*a).to_owned()))
                .collect(),
            body: Vec::new(),
            head_bytes: 0,
        }
    }

    #[test]
    fn browsers_get_html_and_curl_json() {
        let chromium = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7";
        let firefox = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert!(prefers_html(&get(&[chromium])));
        assert!(prefers_html(&get(&[firefox])));
        assert!(prefers_html(&get(&["text/html"])));
        assert!(!prefers_html(&get(&[])), "no Accept: JSON");
        assert!(!prefers_html(&get(&["*/*"])), "curl");
        assert!(!prefers_html(&get(&["application/json"])));
        assert!(
            !prefers_html(&get(&["application/json, text/html"])),
            "a tie keeps JSON"
        );
        assert!(!prefers_html(&get(&["text/html;q=0.5, application/json"])));
        assert!(prefers_html(&get(&["text/html, application/json;q=0.5"])));
        assert!(!prefers_html(&get(&["text/html;q=0"])));
        assert!(prefers_html(&get(&["application/json;q=0.1", "TEXT/HTML"])));
    }

    #[test]
    fn the_page_escapes_what_the_peer_sent() {
        let mut j = Journal::silent();
        let id = j.open(
            "10.77.0.2:443".parse().unwrap(),
            "10.77.0.1:40000".parse().unwrap(),
            1_796_033_201_197_183,
        );
        j.record(
            Some(id),
            1_796_033_201_200_136,
            Stage::Decrypt,
            What::TlsEstablished {
                version: "TLSv1_3".into(),
                cipher: "TLS13_AES_256_GCM_SHA384".into(),
                sni: Some("<img src=x onerror=alert(1)>".into()),
                alpn: Some("http/1.1".into()),
                handshake_us: 1244,
            },
        );
        j.record(
            Some(id),
            1_796_033_201_200_398,
            Stage::Parse,
            What::Rejected {
                status: 400,
                reason: "invalid Host header \"<script>x</script>\"".into(),
            },
        );
        let response = response(j.get(id));
        assert!(
            response
                .headers
                .iter()
                .any(|(n, v)| *n == "Content-Type" && v.starts_with("text/html"))
        );
        assert!(
            response
                .headers
                .iter()
                .any(|(n, _)| *n == "Content-Security-Policy")
        );
        let Body::Bytes(bytes) = &response.body else {
            panic!("a whole page")
        };
        let html = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            !html.contains("<script>") && !html.contains("<img"),
            "{html}"
        );
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "SNI in the timeline"
        );
        assert!(html.contains("invalid Host header &quot;&lt;script&gt;x&lt;/script&gt;&quot;"));
        assert!(html.contains("<h1>Connection #1</h1>"));
        assert!(html.contains("2026-11-30 10:06:41 UTC"), "{html}");
        assert!(html.contains("<svg "), "the ladder");
        assert!(html.contains("synack ladder &lt;capture&gt;"));
        assert!(html.contains("synack stats &lt;capture&gt; --plot out.svg"));
        assert!(
            html.contains("wireshark -r &lt;capture&gt; -Y 'tcp.port == 40000'"),
            "{html}"
        );
        assert!(
            html.contains("TLS handshake 1.244 ms: TLSv1_3"),
            "the band in the ladder"
        );
    }

    #[test]
    fn escape_covers_the_five() {
        assert_eq!(
            escape(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("plain / text"), "plain / text");
    }
}

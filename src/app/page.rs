//! The page at `/`.

pub const INDEX: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>synack: the journey of a request</title>
<style>
body { font: 16px/1.5 system-ui, sans-serif; max-width: 46em; margin: 2em auto; padding: 0 1em; color: #222; }
code, pre { font: 14px ui-monospace, monospace; background: #f4f4f4; padding: 0 .2em; }
ol li { margin: .3em 0; }
</style>
</head>
<body>
<h1>synack</h1>
<p>This page came to you from a TCP/IP stack running in userspace (smoltcp on a TUN
device), not from the kernel. Every packet of this exchange is in the capture, with
comments on the segments that matter.</p>
<h2>The journey of this request</h2>
<ol start="0">
<li><b>resolve</b>: your resolver asks for the name over UDP and synack's DNS responder answers.</li>
<li><b>connect</b>: your SYN, our SYN-ACK, your ACK; the accept queue hands the connection over.</li>
<li><b>receive</b>: the request bytes land in the socket's receive buffer and are copied out.</li>
<li><b>decrypt</b>: over HTTPS, the TLS records are opened (rustls): version, cipher, SNI, ALPN.</li>
<li><b>parse</b>: the request line and headers are parsed (httparse), limits enforced.</li>
<li><b>decode</b>: a JSON body is decoded (POST /json).</li>
<li><b>process</b>: the handler for the route runs.</li>
<li><b>respond</b>: status, headers and body are built; big bodies are streamed.</li>
<li><b>encrypt</b>: over HTTPS, the response is sealed into TLS records.</li>
<li><b>send</b>: bytes go into the send buffer, are cut into segments and acknowledged.</li>
<li><b>close</b>: keep-alive reuse, or FIN / ACK both ways and TIME-WAIT.</li>
</ol>
<h2>Routes</h2>
<ul>
<li><a href="/echo">GET /echo</a>: the request as the server parsed it, as JSON.</li>
<li><code>POST /json</code>: decodes a JSON body and says what it found
 (<code>curl -d '{"a":1}' http://10.77.0.2/json</code>).</li>
<li><a href="/bytes/1000000">GET /bytes/N</a>: exactly N bytes, streamed (try N = 10000000000).</li>
<li><a href="/journey">GET /journey</a>: this very connection's life so far: both ISNs, the SYN's
 options, bytes each way, and when each stage happened. A browser gets a page with the
 connection's ladder diagram; curl gets JSON.</li>
<li><a href="/stats">GET /stats</a>: the server's counters, heap allocations included.</li>
</ul>
<p>Open the capture in Wireshark and look at the packet comments, then
Statistics &gt; Flow Graph.</p>
</body>
</html>
"#;

#[cfg(test)]
mod tests {
    use crate::journey::Stage;

    #[test]
    fn the_home_page_lists_every_stage_in_order() {
        let mut from = 0;
        for stage in Stage::ALL {
            let item = format!("<li><b>{}</b>:", stage.name());
            let at = super::INDEX[from..]
                .find(&item)
                .unwrap_or_else(|| panic!("{item} missing or out of order"));
            from += at + item.len();
        }
        assert_eq!(
            super::INDEX.matches("<li><b>").count(),
            Stage::ALL.len(),
            "one item per stage"
        );
    }
}

//! The routes: what the server says once a request is parsed.
//!
//! `/` explains the journey, `/echo` shows the parsed request, `/json` decodes a body,
//! `/bytes/N` streams N bytes, `/journey` shows this connection's life (JSON, or an HTML
//! page with a ladder diagram for a browser), and with a root directory, static files.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Value, json};

use crate::http::{Body, Request, Response};
use crate::journey::ConnRecord;

mod journey_page;
mod ladder_svg;
mod page;
pub mod static_files;

/// The largest `/bytes/N`: 1 TiB. A bound so a typo cannot ask for 2^64 bytes; far above
/// the 10 GB a user might really stream.
pub const MAX_BYTES_ROUTE: u64 = 1 << 40;

/// The structured-body decoding a handler did, for the journey's decode stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeOutcome {
    pub content_type: String,
    pub bytes: usize,
    pub ok: bool,
    pub detail: String,
}

/// A handled request: the route that matched, its response, and what was decoded.
#[derive(Debug)]
pub struct Handled {
    pub route: &'static str,
    pub response: Response,
    pub decoded: Option<DecodeOutcome>,
}

impl Handled {
    fn plain(route: &'static str, response: Response) -> Self {
        Handled {
            route,
            response,
            decoded: None,
        }
    }
}

/// Server-wide numbers for `GET /stats`, refreshed by the stack at each turn of its loop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub connections: u64,
    pub active_connections: usize,
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub syn_dropped: u64,
    pub time_wait_cut: u64,
    pub fin_timeouts: u64,
    pub dns_answered: u64,
    pub dns_dropped: u64,
    pub device_errors: u64,
    /// Heap allocations since start, when the counting allocator is installed (the
    /// binary does): it grows per connection and per request, never per packet.
    pub heap_allocations: Option<u64>,
    /// TIME-WAIT entries now.
    pub time_wait: usize,
    /// Everything the node counts: SYN cookies sent and validated, challenge ACKs,
    /// TIME-WAIT events, drops by reason.
    pub node: Option<crate::node::Counters>,
}

/// The application: configuration for the routes, shared by every connection.
#[derive(Debug, Clone, Default)]
pub struct App {
    /// Canonical static-file root (`--root`), if any.
    root: Option<PathBuf>,
    stats: Stats,
}

impl App {
    /// `root` must exist; it is canonicalised once here so every request compares against
    /// the real path.
    pub fn new(root: Option<PathBuf>) -> std::io::Result<Self> {
        let root = root.map(|r| r.canonicalize()).transpose()?;
        Ok(App {
            root,
            stats: Stats::default(),
        })
    }

    /// The numbers `GET /stats` shows.
    pub fn set_stats(&mut self, stats: Stats) {
        self.stats = stats;
    }

    /// Answers one request. `conn` is this connection's journey so far, for `/journey`.
    pub fn handle(&self, req: &Request, conn: Option<&ConnRecord>) -> Handled {
        let path = req.path();
        let method = req.method.as_str();
        let get_like = matches!(method, "GET" | "HEAD");
        let allow_get = || not_allowed("GET, HEAD");
        match path {
            "/" if get_like => Handled::plain("/", Response::html(200, page::INDEX)),
            "/" => Handled::plain("/", allow_get()),
            "/echo" if get_like => Handled::plain("/echo", echo(req)),
            "/echo" => Handled::plain("/echo", allow_get()),
            "/journey" if get_like => Handled::plain("/journey", journey(req, conn)),
            "/stats" if get_like => Handled::plain("/stats", Response::json(200, &self.stats)),
            "/stats" => Handled::plain("/stats", allow_get()),
            "/journey" => Handled::plain("/journey", allow_get()),
            "/json" if method == "POST" => decode_json(req),
            "/json" => Handled::plain("/json", not_allowed("POST")),
            _ if path.starts_with("/bytes/") => {
                let response = if get_like {
                    bytes(&path["/bytes/".len()..])
                } else {
                    allow_get()
                };
                Handled::plain("/bytes/N", response)
            }
            _ => match &self.root {
                Some(root) if get_like => Handled::plain("static", static_files::serve(root, path)),
                Some(root) if static_files::resolve(root, path).is_some() => {
                    Handled::plain("static", allow_get())
                }
                _ => Handled::plain("not found", not_found(path)),
            },
        }
    }
}

/// 405 with the `Allow` header RFC 9110 §15.5.6 requires.
fn not_allowed(allow: &'static str) -> Response {
    Response::text(405, format!("method not allowed here; allowed: {allow}"))
        .with_header("Allow", allow)
}

pub(crate) fn not_found(path: &str) -> Response {
    Response::text(404, format!("no route for {path}; see / for the routes"))
}

fn echo(req: &Request) -> Response {
    #[derive(Serialize)]
    struct Header<'a> {
        name: &'a str,
        value: &'a str,
    }
    let headers: Vec<Header<'_>> = req
        .headers
        .iter()
        .map(|(name, value)| Header { name, value })
        .collect();
    Response::json(
        200,
        &json!({
            "method": req.method,
            "target": req.target,
            "path": req.path(),
            "version": req.version.as_str(),
            "headers": headers,
            "head_bytes": req.head_bytes,
            "body_bytes": req.body.len(),
        }),
    )
}

/// This connection's record: an HTML page for a browser, the JSON for everyone else
/// (RFC 9110 §12.5.5: the answer varies with Accept, and says so).
fn journey(req: &Request, conn: Option<&ConnRecord>) -> Response {
    let response = if journey_page::prefers_html(req) {
        journey_page::response(conn)
    } else {
        match conn {
            Some(rec) => Response::json(200, rec),
            None => Response::json(
                200,
                &json!({"error": "this connection has no journey record"}),
            ),
        }
    };
    response.with_header("Vary", "Accept")
}

fn bytes(n: &str) -> Response {
    match n.parse::<u64>() {
        Ok(len) if len <= MAX_BYTES_ROUTE => {
            Response::new(200, "text/plain; charset=us-ascii", Body::Pattern(len))
        }
        Ok(_) => Response::text(400, format!("/bytes/N: N may be at most {MAX_BYTES_ROUTE}")),
        Err(_) => Response::text(400, format!("/bytes/N: {n:?} is not a byte count")),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// What a JSON value is, as far as a reader wants to know: its type and size, and for an
/// object each member's type and size.
fn shape(v: &Value, depth: usize) -> Value {
    let mut out = json!({"type": type_name(v)});
    match v {
        Value::String(s) => out["length"] = json!(s.chars().count()),
        Value::Array(a) => out["elements"] = json!(a.len()),
        Value::Object(o) => {
            out["keys"] = json!(o.keys().collect::<Vec<_>>());
            if depth < 2 {
                out["members"] = o
                    .iter()
                    .map(|(k, v)| (k.clone(), shape(v, depth + 1)))
                    .collect();
            }
        }
        Value::Number(n) => out["value"] = json!(n),
        Value::Bool(b) => out["value"] = json!(b),
        Value::Null => {}
    }
    out
}

fn decode_json(req: &Request) -> Handled {
    let content_type = req.header("content-type").unwrap_or("(none)").to_owned();
    let bytes = req.body.len();
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(value) => {
            let mut answer = shape(&value, 0);
            answer["bytes"] = json!(bytes);
            answer["content_type"] = json!(content_type);
            Handled {
                route: "/json",
                decoded: Some(DecodeOutcome {
                    content_type,
                    bytes,
                    ok: true,
                    detail: format!("a JSON {}", type_name(&value)),
                }),
                response: Response::json(200, &answer),
            }
        }
        Err(e) => {
            let detail = format!("{e}");
            Handled {
                route: "/json",
                decoded: Some(DecodeOutcome {
                    content_type,
                    bytes,
                    ok: false,
                    detail: detail.clone(),
                }),
                response: Response::json(
                    400,
                    &json!({"error": detail, "line": e.line(), "column": e.column(), "bytes": bytes}),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Version;

    fn req(method: &str, target: &str, body: &[u8]) -> Request {
        Request {
            method: method.into(),
            target: target.into(),
            version: Version::Http11,
            headers: vec![("Host".into(), "x".into())],
            body: body.to_vec(),
            head_bytes: 10,
        }
    }

    fn body_json(h: &Handled) -> Value {
        let Body::Bytes(b) = &h.response.body else {
            panic!("not a byte body")
        };
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn routes_and_methods() {
        let mut app = App::default();
        app.set_stats(Stats {
            connections: 7,
            ..Stats::default()
        });
        let stats = app.handle(&req("GET", "/stats", b""), None);
        assert_eq!(stats.response.status, 200);
        assert_eq!(body_json(&stats)["connections"], 7);
        assert_eq!(
            app.handle(&req("POST", "/stats", b""), None)
                .response
                .status,
            405
        );
        assert_eq!(app.handle(&req("GET", "/", b""), None).response.status, 200);
        assert_eq!(
            app.handle(&req("HEAD", "/echo", b""), None).response.status,
            200
        );
        assert_eq!(
            app.handle(&req("GET", "/nope", b""), None).response.status,
            404
        );
        let h = app.handle(&req("GET", "/json", b""), None);
        assert_eq!(h.response.status, 405);
        assert!(h.response.headers.contains(&("Allow", "POST".into())));
        let h = app.handle(&req("DELETE", "/", b""), None);
        assert_eq!(h.response.status, 405);
        assert!(h.response.headers.contains(&("Allow", "GET, HEAD".into())));
    }

    #[test]
    fn journey_is_json_for_curl_and_html_for_a_browser() {
        let mut journal = crate::journey::Journal::silent();
        let id = journal.open(
            "10.77.0.2:80".parse().unwrap(),
            "10.77.0.1:40000".parse().unwrap(),
            0,
        );
        let rec = journal.get(id);
        let app = App::default();
        let mut curl = req("GET", "/journey", b"");
        curl.headers.push(("Accept".into(), "*/*".into()));
        let h = app.handle(&curl, rec);
        assert_eq!(
            h.response.headers[0],
            ("Content-Type", "application/json".into())
        );
        assert!(h.response.headers.contains(&("Vary", "Accept".into())));
        let Body::Bytes(json) = &h.response.body else {
            panic!()
        };
        let Body::Bytes(before) = Response::json(200, rec.unwrap()).body else {
            panic!()
        };
        assert_eq!(json, &before, "the JSON is what it always was");
        assert_eq!(body_json(&h)["id"], 1);

        let mut browser = req("GET", "/journey", b"");
        browser.headers.push((
            "Accept".into(),
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8".into(),
        ));
        let h = app.handle(&browser, rec);
        assert_eq!(h.response.status, 200);
        assert_eq!(
            h.response.headers[0],
            ("Content-Type", "text/html; charset=utf-8".into())
        );
        assert!(h.response.headers.contains(&("Vary", "Accept".into())));
        let Body::Bytes(html) = &h.response.body else {
            panic!()
        };
        let html = String::from_utf8_lossy(html);
        assert!(
            html.starts_with("<!doctype html>") && html.contains("<svg "),
            "{html}"
        );
        // With no record, a browser still gets a page.
        let h = app.handle(&browser, None);
        assert_eq!(h.response.status, 200);
        assert!(h.response.headers[0].1.starts_with("text/html"));
    }

    #[test]
    fn bytes_route_streams_the_asked_length() {
        let app = App::default();
        let h = app.handle(&req("GET", "/bytes/10000000000", b""), None);
        assert!(matches!(h.response.body, Body::Pattern(10_000_000_000)));
        assert_eq!(
            app.handle(&req("GET", "/bytes/abc", b""), None)
                .response
                .status,
            400
        );
        assert_eq!(
            app.handle(&req("GET", "/bytes/-1", b""), None)
                .response
                .status,
            400
        );
        assert_eq!(
            app.handle(&req("GET", "/bytes/99999999999999", b""), None)
                .response
                .status,
            400
        );
    }

    #[test]
    fn echo_shows_the_parsed_request() {
        let h = App::default().handle(&req("GET", "/echo?x=1", b""), None);
        let v = body_json(&h);
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/echo");
        assert_eq!(v["target"], "/echo?x=1");
        assert_eq!(v["headers"][0]["name"], "Host");
    }

    #[test]
    fn json_is_decoded_and_described() {
        let h = App::default().handle(&req("POST", "/json", br#"{"a":[1,2,3],"b":"xy"}"#), None);
        assert_eq!(h.response.status, 200);
        let v = body_json(&h);
        assert_eq!(v["type"], "object");
        assert_eq!(v["keys"], json!(["a", "b"]));
        assert_eq!(v["members"]["a"]["elements"], 3);
        assert_eq!(v["members"]["b"]["length"], 2);
        assert!(h.decoded.unwrap().ok);
    }

    #[test]
    fn bad_json_says_where() {
        let h = App::default().handle(&req("POST", "/json", b"{\n  \"a\": nope}"), None);
        assert_eq!(h.response.status, 400);
        let v = body_json(&h);
        assert_eq!(
            (v["line"].as_u64(), v["column"].as_u64()),
            (Some(2), Some(9)),
            "serde_json points just past the bad token"
        );
        assert!(!h.decoded.unwrap().ok);
    }
}

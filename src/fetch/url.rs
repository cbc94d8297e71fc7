//! The URLs `fetch` takes: `http://` or `https://`, a host name or IPv4 address, an
//! optional port, and a path with its query (RFC 3986 §3, the parts HTTP uses).

use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub tls: bool,
    pub host: String,
    /// The host as an address, when the URL gives one (no lookup then).
    pub ip: Option<Ipv4Addr>,
    pub port: u16,
    /// Path and query: what goes in the request line (RFC 9112 §3.2.1).
    pub target: String,
}

impl std::str::FromStr for Url {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(format!(
                "{s:?} is not an http:// or https:// URL (example: http://synack.test/)"
            ));
        };
        let (authority, target) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'?' => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_owned()),
            None => (rest, "/".to_owned()),
        };
        // The fragment never goes on the wire (RFC 3986 §3.5).
        let target = target.split('#').next().unwrap_or("/").to_owned();
        if authority.contains('@') {
            return Err(format!("{s:?}: user information in URLs is not supported"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or_else(|| format!("{s:?}: port {p:?} must be 1..=65535"))?;
                (h, port)
            }
            None => (authority, if tls { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(format!("{s:?} has no host"));
        }
        if host.starts_with('[') {
            return Err(format!(
                "{s:?}: IPv6 is not supported; use an IPv4 address or a name"
            ));
        }
        let valid = host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !valid || target.bytes().any(|b| b <= b' ') {
            return Err(format!(
                "{s:?} is not a valid URL (no spaces or control characters)"
            ));
        }
        Ok(Url {
            tls,
            host: host.to_ascii_lowercase(),
            ip: host.parse().ok(),
            port,
            target,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u: Url = "https://synack.test/bytes/10?x=1#frag".parse().unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.ip, u.port, u.target.as_str()),
            (true, "synack.test", None, 443, "/bytes/10?x=1")
        );
        let u: Url = "http://10.77.0.1:8000".parse().unwrap();
        assert_eq!(u.ip, Some(Ipv4Addr::new(10, 77, 0, 1)));
        assert_eq!((u.port, u.target.as_str()), (8000, "/"));
        assert_eq!("http://h?q".parse::<Url>().unwrap().target, "/?q");
        for bad in [
            "ftp://x/",
            "http://",
            "http://h:0/",
            "http://h:99999/",
            "http://a b/",
            "http://[::1]/",
        ] {
            assert!(bad.parse::<Url>().is_err(), "{bad}");
        }
    }
}

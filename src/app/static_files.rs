//! Static files under `--root`, never anything outside it.
//!
//! A request path is percent-decoded, split into segments, and refused if any segment is
//! `.` or `..` or holds a slash, backslash or NUL once decoded (so `%2e%2e` and `%2f`
//! cannot climb). What remains is joined to the root and canonicalised, and must still be
//! under the canonical root: this catches symlinks that point out of it. Every refusal is
//! a 404, so a probe learns nothing about what exists outside.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::http::{Body, Response};

/// Decodes `%XX` escapes; `None` for a malformed escape.
pub fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The file a request path names under `root` (already canonical), if it is safely there.
pub fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let mut full = root.to_path_buf();
    for raw in path.split('/').filter(|s| !s.is_empty()) {
        let seg = percent_decode(raw)?;
        let seg = String::from_utf8(seg).ok()?;
        if seg == "." || seg == ".." || seg.contains(['/', '\\', '\0']) {
            return None;
        }
        full.push(seg);
    }
    let mut real = full.canonicalize().ok()?;
    if real.is_dir() {
        real = real.join("index.html").canonicalize().ok()?;
    }
    (real.starts_with(root) && real.is_file()).then_some(real)
}

/// The content type for a file name's extension.
pub fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "txt" | "md" | "rs" | "toml" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "pcap" | "pcapng" => "application/vnd.tcpdump.pcap",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// Serves `path` from `root`, or 404.
pub fn serve(root: &Path, path: &str) -> Response {
    let Some(real) = resolve(root, path) else {
        return super::not_found(path);
    };
    let opened = File::open(&real).and_then(|f| {
        let len = f.metadata()?.len();
        Ok((f, len))
    });
    match opened {
        Ok((file, len)) => Response::new(200, content_type(&real), Body::File(file, len)),
        Err(_) => super::not_found(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempTree(PathBuf);
    impl Drop for TempTree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tree(name: &str) -> (TempTree, PathBuf) {
        let base =
            std::env::temp_dir().join(format!("synack-static-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("root/sub")).unwrap();
        std::fs::write(base.join("root/index.html"), "home").unwrap();
        std::fs::write(base.join("root/sub/a.txt"), "a").unwrap();
        std::fs::write(base.join("secret.txt"), "secret").unwrap();
        std::os::unix::fs::symlink(base.join("secret.txt"), base.join("root/link")).unwrap();
        let root = base.join("root").canonicalize().unwrap();
        (TempTree(base), root)
    }

    #[test]
    fn files_under_the_root_are_found() {
        let (_t, root) = tree("found");
        assert_eq!(resolve(&root, "/sub/a.txt"), Some(root.join("sub/a.txt")));
        assert_eq!(resolve(&root, "/sub/%61.txt"), Some(root.join("sub/a.txt")));
        assert_eq!(resolve(&root, "/"), Some(root.join("index.html")));
    }

    #[test]
    fn escapes_are_refused() {
        let (_t, root) = tree("escapes");
        for p in [
            "/../secret.txt",
            "/sub/../../secret.txt",
            "/%2e%2e/secret.txt",
            "/%2E%2E/secret.txt",
            "/sub%2f..%2f..%2fsecret.txt",
            "/..%5csecret.txt",
            "/link",
            "/nope",
            "/%zz",
            "/a%00b",
        ] {
            assert_eq!(resolve(&root, p), None, "{p}");
            assert_eq!(serve(&root, p).status, 404, "{p}");
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(
            content_type(Path::new("a.HTML")),
            "text/html; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("a.png")), "image/png");
        assert_eq!(content_type(Path::new("noext")), "application/octet-stream");
    }
}

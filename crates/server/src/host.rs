//! The `Host` header rule of RFC 9112 §3.2: an HTTP/1.1 request without one, any request with
//! two, or with a value that is not `host[:port]`, is answered 400 and its connection closed.
//! It sits in front of every route, since a request that breaks it is not HTTP a server may
//! act on (the host it names decides token realms and redirects).

use axum::extract::Request;
use axum::http::{header, HeaderMap, Version};
use axum::middleware::Next;
use axum::response::Response;

/// The middleware: refuses a request whose `Host` breaks the rule, else passes it on.
pub async fn check(req: Request, next: Next) -> Response {
    if host_ok(req.version(), req.headers()) {
        next.run(req).await
    } else {
        crate::error::bad_host()
    }
}

/// Whether the request's `Host` fields follow RFC 9112 §3.2. HTTP/2 and later carry the
/// authority in a pseudo-header, and HTTP/1.0 may omit `Host`; neither may repeat it.
pub fn host_ok(version: Version, headers: &HeaderMap) -> bool {
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => false,
        (Some(h), None) => valid_host(h.as_bytes()),
        (None, _) => version != Version::HTTP_11,
    }
}

/// `uri-host [ ":" port ]` (RFC 3986 §3.2.2): an IP literal in brackets, or a registered name
/// of unreserved characters, sub-delimiters and percent-escapes (an IPv4 address is one); the
/// port is digits. An empty value is allowed, as the RFC allows it for an empty authority.
fn valid_host(v: &[u8]) -> bool {
    let (host, port) = match v.iter().rposition(|&b| b == b':') {
        Some(i) if !v[i..].contains(&b']') => (&v[..i], &v[i + 1..]),
        _ => (v, &[][..]),
    };
    if !port.iter().all(u8::is_ascii_digit) {
        return false;
    }
    if let Some(inner) = host.strip_prefix(b"[").and_then(|h| h.strip_suffix(b"]")) {
        return std::str::from_utf8(inner).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok());
    }
    reg_name(host)
}

fn reg_name(host: &[u8]) -> bool {
    let mut i = 0;
    while i < host.len() {
        let b = host[i];
        if b == b'%' {
            let hex = host.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
            continue;
        }
        if !(b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b)) {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_hosts(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::HOST, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn host_values_follow_the_uri_grammar() {
        for good in [
            &b"localhost"[..],
            b"localhost:5000",
            b"127.0.0.1:5000",
            b"[::1]:5000",
            b"[::1]",
            b"registry.example.com",
            b"my_host%41",
            b"",
        ] {
            assert!(valid_host(good), "{}", String::from_utf8_lossy(good));
        }
        for bad in [
            &b"a b"[..],
            b"host:port",
            b"user@host",
            b"host/path",
            b"[::1",
            b"[nonsense]:80",
            b"a%zz",
            b"h\"q",
            b"a:1:2",
        ] {
            assert!(!valid_host(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn http_1_1_needs_exactly_one_host() {
        assert!(host_ok(Version::HTTP_11, &with_hosts(&[b"x"])));
        assert!(!host_ok(Version::HTTP_11, &with_hosts(&[])));
        assert!(!host_ok(Version::HTTP_11, &with_hosts(&[b"x", b"x"])));
        assert!(!host_ok(Version::HTTP_11, &with_hosts(&[b"a b"])));
        assert!(host_ok(Version::HTTP_10, &with_hosts(&[])));
        assert!(!host_ok(Version::HTTP_10, &with_hosts(&[b"x", b"y"])));
        assert!(host_ok(Version::HTTP_2, &with_hosts(&[])));
    }
}

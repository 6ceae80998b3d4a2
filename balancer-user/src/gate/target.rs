//! Where a gate is: an `http://` URL taken apart for one request.

use hyper::Uri;

/// A URL this daemon cannot ask.
#[derive(Debug, thiserror::Error)]
#[error("bad gate URL {url:?}: {why}")]
pub struct TargetError {
    url: String,
    why: &'static str,
}

/// Host, port and path of an `http://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// TCP port (80 when the URL names none).
    pub port: u16,
    /// Path and query, at least "/".
    pub path: String,
    /// The `Host` header.
    pub authority: String,
}

impl Target {
    /// Parses `url`: plain HTTP only (no TLS), a host, an optional port and path.
    pub fn parse(url: &str) -> Result<Self, TargetError> {
        let bad = |why| TargetError {
            url: url.to_string(),
            why,
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("only http:// URLs are supported"));
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user information is not supported"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Self {
            host: host.to_string(),
            port: authority.port_u16().unwrap_or(80),
            path: uri
                .path_and_query()
                .map_or("/".to_string(), |p| p.as_str().to_string()),
            authority: authority.as_str().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_taken_apart_or_refused() {
        let t = Target::parse("http://198.18.0.1:9090").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("198.18.0.1", 9090, "/")
        );
        let t = Target::parse("http://[2001:db8::1]/gate?x=1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("2001:db8::1", 80, "/gate?x=1")
        );
        assert_eq!(t.authority, "[2001:db8::1]");
        for (url, why) in [
            ("https://198.18.0.1/", "only http://"),
            ("198.18.0.1:9090", "only http://"),
            ("http://user@198.18.0.1/", "user information"),
            ("not a url at all", "not a URL"),
        ] {
            let err = Target::parse(url).unwrap_err().to_string();
            assert!(err.contains(why), "{url}: {err}");
        }
    }
}

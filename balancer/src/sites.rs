//! Which pool a request goes to: the `[[site]]` one of whose `hosts` is the request's host,
//! else `[pool]` (HAProxy's `use_backend NAME if { hdr(host) -i ... }` and `default_backend`).
//!
//! The host is HTTP/2's `:authority` or an absolute-form target's authority when there is
//! one, else the `Host` header; its port is left out and names are compared exactly, ignoring
//! ASCII case. [`Pools`] is built whole by `discovery::refresh` and swapped in one store, so a
//! request sees the hosts and the pools of one config.

use std::sync::Arc;

use http::Uri;
use http::header::{self, HeaderMap};

use crate::pool::{Backend, Pool};

/// Every pool in force, and the hosts that choose a site's.
#[derive(Debug)]
pub struct Pools {
    /// `[pool]` first, then the sites in the config's order.
    pub all: Vec<Arc<Pool>>,
    /// A site's host name (lower-cased) and its pool's index in `all`.
    hosts: Vec<(String, usize)>,
}

impl Pools {
    /// `all` starts with the default pool; `sites` gives each site's name and hosts.
    pub fn new<'a>(
        all: Vec<Arc<Pool>>,
        sites: impl IntoIterator<Item = (&'a str, &'a [String])>,
    ) -> Self {
        let mut hosts = Vec::new();
        for (name, names) in sites {
            if let Some(index) = all.iter().position(|pool| pool.name == name) {
                hosts.extend(names.iter().map(|host| (host.to_ascii_lowercase(), index)));
            }
        }
        Self { all, hosts }
    }

    /// The pool for a request: by its host (`request_host`) when there are sites, else the
    /// default pool without looking at the request.
    pub fn for_request(&self, uri: &Uri, headers: &HeaderMap) -> &Arc<Pool> {
        if self.hosts.is_empty() {
            return &self.all[0];
        }
        self.for_host(request_host(uri, headers))
    }

    /// The pool for a request to `host` (without port): its site's, else `[pool]`.
    pub fn for_host(&self, host: Option<&str>) -> &Arc<Pool> {
        let site = host.and_then(|host| {
            self.hosts
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(host))
        });
        &self.all[site.map_or(0, |&(_, index)| index)]
    }

    /// The pool named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Pool>> {
        self.all.iter().find(|pool| pool.name == name)
    }

    /// Every backend of every pool.
    pub fn backends(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.all.iter().flat_map(|pool| &pool.backends)
    }
}

/// The host a request is for, without its port: the target's authority (HTTP/2
/// `:authority`, or an absolute-form target), else the Host header.
pub fn request_host<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    let authority = match uri.authority() {
        Some(authority) => authority.as_str(),
        None => headers.get(header::HOST)?.to_str().ok()?,
    };
    Some(split_port(authority).0)
}

/// `host:port` as host and port; `[v6]:port` keeps its brackets on the host. A part after
/// the last `:` that is not a port is taken as part of the host.
pub fn split_port(authority: &str) -> (&str, Option<u16>) {
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && (!host.contains(':') || host.ends_with(']')) => {
            match port.parse() {
                Ok(port) => (host, Some(port)),
                Err(_) => (authority, None),
            }
        }
        _ => (authority, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Algorithm;
    use http::HeaderValue;

    #[test]
    fn the_port_is_split_off_and_ipv6_keeps_its_brackets() {
        assert_eq!(split_port("www.foobar.com"), ("www.foobar.com", None));
        assert_eq!(
            split_port("www.foobar.com:8080"),
            ("www.foobar.com", Some(8080))
        );
        assert_eq!(split_port("[::1]:8443"), ("[::1]", Some(8443)));
        assert_eq!(split_port("[::1]"), ("[::1]", None));
        assert_eq!(split_port("::1"), ("::1", None));
        assert_eq!(split_port("host:http"), ("host:http", None));
    }

    #[test]
    fn the_authority_wins_over_the_host_header() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::HOST,
            HeaderValue::from_static("Status.FooBar.com:8443"),
        );
        let origin = Uri::from_static("/graph");
        assert_eq!(request_host(&origin, &headers), Some("Status.FooBar.com"));
        let absolute = Uri::from_static("https://www.foobar.com/graph");
        assert_eq!(request_host(&absolute, &headers), Some("www.foobar.com"));
        assert_eq!(request_host(&origin, &HeaderMap::new()), None);
    }

    #[test]
    fn a_site_is_chosen_by_exact_host_ignoring_case_else_the_default_pool() {
        let pool = |name: &str| Arc::new(Pool::new(name, Vec::new(), Algorithm::RoundRobin));
        let hosts = ["status.foobar.com".to_owned()];
        let pools = Pools::new(
            vec![pool("default"), pool("status")],
            [("status", &hosts[..]), ("gone", &hosts[..])],
        );
        let chosen = |host| pools.for_host(host).name.as_str();
        assert_eq!(chosen(Some("status.foobar.com")), "status");
        assert_eq!(chosen(Some("STATUS.foobar.COM")), "status");
        assert_eq!(chosen(Some("www.status.foobar.com")), "default");
        assert_eq!(chosen(Some("status.foobar.com.evil")), "default");
        assert_eq!(chosen(None), "default");
        assert_eq!(pools.get("status").map(|p| p.name.as_str()), Some("status"));
    }
}

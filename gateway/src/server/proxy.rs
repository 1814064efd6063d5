//! The client's address behind reverse proxies the operator trusts (`[server]
//! trusted_proxies`). Every per-address rule (`chat_conversations_per_address`,
//! `token_address_failures`) counts a request under the address this gives, which the
//! listener puts in the request's `ConnectInfo`: behind a proxy the socket's peer is the
//! proxy, the same address for every customer.
//!
//! A request whose socket's peer is trusted comes from the address its proxy put last in
//! `X-Forwarded-For`, and so on leftwards while that address is a trusted proxy too (as
//! nginx's `real_ip_recursive`): the first address no trusted proxy vouches for is the
//! client's. What an untrusted client writes in the header is never looked at, so it
//! cannot choose the address it counts under.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The proxies `[server] trusted_proxies` names (none by default: every request comes
/// from its socket's peer).
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(std::sync::Arc<[IpNet]>);

impl TrustedProxies {
    /// From the configuration's entries, checked when it was loaded (one that does not
    /// parse is skipped).
    pub fn new(entries: &[String]) -> TrustedProxies {
        TrustedProxies(entries.iter().filter_map(|e| crate::config::proxy_range(e)).collect())
    }

    fn trusts(&self, a: IpAddr) -> bool {
        let a = a.to_canonical();
        self.0.iter().any(|net| net.contains(&a))
    }

    /// The address the request from `peer` with `headers` counts as coming from (the
    /// port stays the peer's: nothing reads it). A value that is not an address
    /// (`unknown`, a name) ends the walk at the proxy that wrote it: that proxy's peer is
    /// not known.
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if self.0.is_empty() || !self.trusts(peer.ip()) {
            return peer;
        }
        // Several headers are one list, in order (RFC 9110, section 5.3).
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer.ip();
        for hop in hops.iter().rev() {
            let Some(a) = hop_address(hop) else { break };
            client = a;
            if !self.trusts(a) {
                break;
            }
        }
        SocketAddr::new(client.to_canonical(), peer.port())
    }
}

/// One `X-Forwarded-For` entry's address: as nginx writes it (`203.0.113.7`, `2001:db8::1`),
/// or with a port as some load balancers do (`203.0.113.7:5123`, `[2001:db8::1]:5123`).
fn hop_address(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn client(trusted: &[&str], peer: &str, values: &[&str]) -> String {
        let t = TrustedProxies::new(&trusted.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let peer = SocketAddr::new(peer.parse().unwrap(), 4000);
        t.client(peer, &headers(values)).ip().to_string()
    }

    #[test]
    fn entries_are_addresses_or_ranges() {
        use crate::config::proxy_range as parse;
        assert_eq!(parse("10.0.0.0/8"), Some("10.0.0.0/8".parse().unwrap()));
        assert_eq!(parse(" 10.0.0.7 "), Some("10.0.0.7/32".parse().unwrap()));
        assert_eq!(parse("::1"), Some("::1/128".parse().unwrap()));
        assert_eq!(parse("fd00::/8"), Some("fd00::/8".parse().unwrap()));
        for bad in ["", "localhost", "10.0.0.0/33", "10.0.0.1:80", "*"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_writes() {
        assert_eq!(client(&[], "127.0.0.1", &["203.0.113.7"]), "127.0.0.1");
        assert_eq!(client(&["10.0.0.0/8"], "127.0.0.2", &["203.0.113.7"]), "127.0.0.2");
    }

    #[test]
    fn a_trusted_proxy_vouches_for_the_address_it_appended() {
        assert_eq!(client(&["10.0.0.0/8"], "10.1.2.3", &["203.0.113.7"]), "203.0.113.7");
        // What the client wrote itself, left of what the proxy appended, is not believed.
        assert_eq!(client(&["10.0.0.0/8"], "10.1.2.3", &["198.51.100.1, 203.0.113.7"]), "203.0.113.7");
        // Through two trusted proxies (one header, or one header each), and with ports.
        assert_eq!(client(&["10.0.0.0/8"], "10.1.2.3", &["198.51.100.1, 203.0.113.7, 10.9.9.9"]), "203.0.113.7");
        assert_eq!(client(&["10.0.0.0/8"], "10.1.2.3", &["203.0.113.7", "10.9.9.9"]), "203.0.113.7");
        assert_eq!(client(&["10.0.0.0/8"], "10.1.2.3", &["203.0.113.7:5123"]), "203.0.113.7");
        assert_eq!(client(&["::1"], "::1", &["[2001:db8::1]:5123"]), "2001:db8::1");
        // An IPv4-mapped peer is its IPv4 address.
        assert_eq!(client(&["10.0.0.0/8"], "::ffff:10.1.2.3", &["203.0.113.7"]), "203.0.113.7");
    }

    #[test]
    fn without_a_usable_header_the_request_is_the_last_known_hops() {
        assert_eq!(client(&["10.0.0.0/8"], "10.1.2.3", &[]), "10.1.2.3");
        assert_eq!(client(&["10.0.0.0/8"], "10.1.2.3", &["unknown"]), "10.1.2.3");
        assert_eq!(client(&["10.0.0.0/8"], "10.1.2.3", &["203.0.113.7, unknown"]), "10.1.2.3");
        assert_eq!(client(&["10.0.0.0/8"], "10.1.2.3", &["unknown, 10.9.9.9"]), "10.9.9.9");
        // Every hop trusted: the leftmost is as far as is known.
        assert_eq!(client(&["10.0.0.0/8"], "10.1.2.3", &["10.5.5.5, 10.9.9.9"]), "10.5.5.5");
    }
}

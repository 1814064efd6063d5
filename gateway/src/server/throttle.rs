//! Failed `/v1/token` attempts, counted per client id and per source address, so secrets
//! cannot be guessed at thousands a second.
//!
//! After `token_failures` wrong secrets for one client id within `token_lockout_secs`, or
//! `token_address_failures` from one address (an IPv6 address counts by its /64, which one
//! host commonly holds whole), that key is refused for `token_lockout_secs` from the
//! failure that crossed the line, whatever the secret. Refused attempts are not counted, so
//! a client that keeps retrying is let in once the lockout has passed. A success forgets
//! the client id's failures (not the address's).
//!
//! Each map holds at most [`MAX_KEYS`] keys, so an attacker rotating ids or addresses
//! cannot grow memory without bound: when full, expired keys go first, then the oldest
//! tenth (keys not locked out before locked ones). Time is tokio's clock.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::config::ServerConfig;

/// Keys kept per map (client ids, addresses).
pub const MAX_KEYS: usize = 10_000;

#[derive(Debug)]
pub struct TokenThrottle {
    clients: Mutex<Counts<String>>,
    addrs: Mutex<Counts<IpAddr>>,
    client_limit: u32,
    addr_limit: u32,
    window: Duration,
}

/// What a failure did to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Counted; this many so far in the window.
    Counted(u32),
    /// This one reached the limit: the key is refused from now on, for the window.
    LockedOut,
}

impl TokenThrottle {
    pub fn new(cfg: &ServerConfig) -> TokenThrottle {
        TokenThrottle::with_capacity(cfg, MAX_KEYS)
    }

    fn with_capacity(cfg: &ServerConfig, cap: usize) -> TokenThrottle {
        TokenThrottle {
            clients: Mutex::new(Counts::new(cap)),
            addrs: Mutex::new(Counts::new(cap)),
            client_limit: cfg.token_failures.max(1),
            addr_limit: cfg.token_address_failures.max(1),
            window: Duration::from_secs(cfg.token_lockout_secs.max(1)),
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// How long `client_id` or `addr` is still refused, if either is.
    pub fn refused(&self, client_id: &str, addr: Option<IpAddr>) -> Option<Duration> {
        let now = Instant::now();
        let by_client = self.clients.lock().locked(client_id, now, self.window);
        let by_addr = addr.and_then(|a| self.addrs.lock().locked(&addr_key(a), now, self.window));
        by_client.max(by_addr)
    }

    /// Counts a wrong secret for `client_id` from `addr`.
    pub fn failed(&self, client_id: &str, addr: Option<IpAddr>) -> (Failure, Option<Failure>) {
        let now = Instant::now();
        let by_client = self.clients.lock().fail(client_id, now, self.client_limit, self.window);
        let by_addr = addr.map(|a| self.addrs.lock().fail(&addr_key(a), now, self.addr_limit, self.window));
        (by_client, by_addr)
    }

    /// A right secret: the client id's failures are forgotten.
    pub fn succeeded(&self, client_id: &str) {
        self.clients.lock().map.remove(client_id);
    }

    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        (self.clients.lock().map.len(), self.addrs.lock().map.len())
    }
}

/// The address a per-address limit counts under (failures here, open chats in the hub):
/// IPv4 as is (an IPv4-mapped IPv6 address too), IPv6 by its /64.
pub(crate) fn addr_key(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V4(_) => a,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

#[derive(Debug)]
struct Entry {
    failures: u32,
    /// The first failure of this window.
    since: Instant,
    locked_until: Option<Instant>,
}

impl Entry {
    fn expired(&self, now: Instant, window: Duration) -> bool {
        match self.locked_until {
            Some(until) => until <= now,
            None => now.duration_since(self.since) >= window,
        }
    }
}

#[derive(Debug)]
struct Counts<K> {
    map: HashMap<K, Entry>,
    cap: usize,
}

impl<K: Hash + Eq> Counts<K> {
    fn new(cap: usize) -> Self {
        Counts { map: HashMap::new(), cap: cap.max(1) }
    }

    fn locked<Q>(&mut self, key: &Q, now: Instant, window: Duration) -> Option<Duration>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let e = self.map.get(key)?;
        if e.expired(now, window) {
            self.map.remove(key);
            return None;
        }
        e.locked_until.map(|until| until - now)
    }

    fn fail<Q>(&mut self, key: &Q, now: Instant, limit: u32, window: Duration) -> Failure
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if !self.map.contains_key(key) && self.map.len() >= self.cap {
            self.make_room(now, window);
        }
        let fresh = Entry { failures: 0, since: now, locked_until: None };
        let e = self.map.entry(key.to_owned()).or_insert(fresh);
        if e.expired(now, window) {
            *e = Entry { failures: 0, since: now, locked_until: None };
        }
        if e.locked_until.is_some() {
            // Already refused (a request that raced the one that locked it).
            return Failure::Counted(e.failures);
        }
        e.failures += 1;
        if e.failures >= limit {
            e.locked_until = Some(now + window);
            Failure::LockedOut
        } else {
            Failure::Counted(e.failures)
        }
    }

    /// Drops expired keys; if that frees nothing, the oldest tenth at once, so a flood of
    /// new keys costs one pass over the map per `cap / 10` keys rather than one per key.
    fn make_room(&mut self, now: Instant, window: Duration) {
        self.map.retain(|_, e| !e.expired(now, window));
        if self.map.len() < self.cap {
            return;
        }
        let mut order: Vec<(bool, Instant)> = self.map.values().map(|e| (e.locked_until.is_some(), e.since)).collect();
        let n = (self.cap / 10).clamp(1, order.len());
        let (_, cut, _) = order.select_nth_unstable(n - 1);
        let cut = *cut;
        self.map.retain(|_, e| (e.locked_until.is_some(), e.since) > cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ServerConfig {
        ServerConfig { token_failures: 3, token_address_failures: 5, token_lockout_secs: 60, ..Default::default() }
    }

    #[test]
    fn a_client_id_is_locked_after_its_limit_and_a_success_forgets_it() {
        let t = TokenThrottle::new(&cfg());
        let ip: Option<IpAddr> = Some("10.0.0.1".parse().unwrap());
        assert_eq!(t.failed("alice", ip).0, Failure::Counted(1));
        t.succeeded("alice");
        assert_eq!(t.failed("alice", ip).0, Failure::Counted(1));
        assert_eq!(t.failed("alice", ip).0, Failure::Counted(2));
        assert_eq!(t.refused("alice", ip), None);
        assert_eq!(t.failed("alice", ip).0, Failure::LockedOut);
        let about_a_minute =
            |d: Option<Duration>| d.is_some_and(|d| d > Duration::from_secs(59) && d <= Duration::from_secs(60));
        assert!(about_a_minute(t.refused("alice", ip)));
        assert_eq!(t.refused("bob", ip), None, "4 failures from the address, limit 5");
        assert_eq!(t.failed("bob", ip), (Failure::Counted(1), Some(Failure::LockedOut)));
        assert!(about_a_minute(t.refused("carol", ip)));
        assert_eq!(t.refused("carol", Some("10.0.0.2".parse().unwrap())), None);
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(addr_key(a), addr_key(b));
        assert_ne!(addr_key(a), addr_key(c));
        assert_eq!(addr_key("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn the_maps_stay_bounded_under_rotating_keys() {
        let t = TokenThrottle::with_capacity(&cfg(), 100);
        t.failed("alice", None);
        t.failed("alice", None);
        t.failed("alice", None);
        for i in 0..10_000u32 {
            let ip = IpAddr::V4(i.into());
            t.failed(&format!("id-{i}"), Some(ip));
        }
        let (clients, addrs) = t.len();
        assert!(clients <= 100 && addrs <= 100, "{clients} client ids, {addrs} addresses kept");
        // Keys not locked out are evicted first: alice's lockout survives the flood.
        assert!(t.refused("alice", None).is_some());
    }
}

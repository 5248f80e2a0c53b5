//! Who may do what: token roles, the rule table, hashing, and the limit on failed logins.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything.
    Operate,
    /// Reads: apps, dynos, logs, billing, hosts; not config vars, tokens or the audit.
    Read,
    /// Joining agents only: exchanged for a host's own credential.
    Join,
    /// One host's own credential: its websocket and slug downloads.
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operate => "operate",
            Role::Read => "read",
            Role::Join => "join",
            Role::Agent => "agent",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "operate" => Some(Role::Operate),
            "read" => Some(Role::Read),
            "join" => Some(Role::Join),
            "agent" => Some(Role::Agent),
            _ => None,
        }
    }

    /// The secret's prefix, so a leaked token says what it is (`dyno_op_...`).
    fn prefix(self) -> &'static str {
        match self {
            Role::Operate => "dyno_op_",
            Role::Read => "dyno_rd_",
            Role::Join => "dyno_jn_",
            Role::Agent => "dyno_ag_",
        }
    }
}

/// The holder of a valid token, as requests carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    /// The host an agent credential belongs to.
    pub host: Option<String>,
}

pub fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new secret for `role`: its prefix and 32 random bytes.
pub fn new_secret(role: Role) -> std::io::Result<String> {
    Ok(format!("{}{}", role.prefix(), random_hex(32)?))
}

/// `bytes` random bytes from the kernel, as hex: every secret the coordinator makes.
pub fn random_hex(bytes: usize) -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Token names: what `tokens:revoke` and the audit show.
pub fn valid_token_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

/// Whether `role` may send `method` to `path`.
pub fn allowed(role: Role, method: &str, path: &str) -> bool {
    let read_only = matches!(method, "GET" | "HEAD");
    let agent_ws = path == "/agent/ws";
    let slug = path.starts_with("/slugs/");
    match role {
        Role::Operate => true,
        Role::Join => agent_ws,
        Role::Agent => agent_ws || (slug && read_only),
        Role::Read => {
            let secret = path.ends_with("/config-vars")
                || path.starts_with("/tokens")
                || path.starts_with("/audit");
            // `/tokens/self` only says who the caller is; a log session only reads logs.
            let reads_logs = method == "POST" && path.ends_with("/log-sessions");
            (read_only || reads_logs) && (!secret || path == "/tokens/self") && !agent_ws && !slug
        }
    }
}

/// Failed authentications per address: past `max` within `window`, the address is refused
/// until the window ends, whatever it presents.
pub struct FailedAuth {
    max: u32,
    window: Duration,
    by_ip: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl FailedAuth {
    pub fn new(max: u32, window: Duration) -> FailedAuth {
        FailedAuth {
            max,
            window,
            by_ip: Mutex::new(HashMap::new()),
        }
    }

    /// How long `ip` is still refused, if it is.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let map = self.by_ip.lock().expect("failed-auth lock");
        let (count, since) = map.get(&ip)?;
        let left = self.window.checked_sub(now.duration_since(*since))?;
        (*count >= self.max && !left.is_zero()).then_some(left)
    }

    pub fn fail(&self, ip: IpAddr, now: Instant) {
        let mut map = self.by_ip.lock().expect("failed-auth lock");
        if map.len() > 100_000 {
            // Bounded: forget windows that ended.
            let window = self.window;
            map.retain(|_, (_, since)| now.duration_since(*since) < window);
        }
        let e = map.entry(ip).or_insert((0, now));
        if now.duration_since(e.1) >= self.window {
            *e = (0, now);
        }
        e.0 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_reach_only_their_endpoints() {
        use Role::*;
        let cases = [
            (Operate, "POST", "/apps", true),
            (Operate, "GET", "/apps/shop/config-vars", true),
            (Read, "GET", "/apps", true),
            (Read, "GET", "/apps/shop/logs", true),
            (Read, "GET", "/billing", true),
            (Read, "GET", "/hosts", true),
            (Read, "GET", "/tokens/self", true),
            (Read, "POST", "/apps/shop/log-sessions", true),
            (Read, "GET", "/apps/shop/config-vars", false),
            (Read, "GET", "/tokens", false),
            (Read, "GET", "/audit", false),
            (Read, "GET", "/slugs/ab", false),
            (Read, "GET", "/agent/ws", false),
            (Read, "POST", "/apps/shop/formation/scale", false),
            (Read, "DELETE", "/apps/shop/dynos/web.1", false),
            (Read, "PATCH", "/apps/shop/config-vars", false),
            (Join, "GET", "/agent/ws", true),
            (Join, "GET", "/slugs/ab", false),
            (Join, "GET", "/apps", false),
            (Agent, "GET", "/agent/ws", true),
            (Agent, "GET", "/slugs/ab", true),
            (Agent, "GET", "/apps", false),
            (Agent, "POST", "/apps", false),
        ];
        for (role, method, path, ok) in cases {
            assert_eq!(allowed(role, method, path), ok, "{role:?} {method} {path}");
        }
    }

    #[test]
    fn secrets_are_hashed_and_say_their_role() {
        let s = new_secret(Role::Read).unwrap();
        assert!(s.starts_with("dyno_rd_") && s.len() == 8 + 64, "{s}");
        assert_ne!(s, new_secret(Role::Read).unwrap());
        assert_eq!(hash(&s).len(), 64);
        assert_eq!(hash(&s), hash(&s));
        assert_ne!(hash(&s), hash(&format!("{s}x")));
        for r in [Role::Operate, Role::Read, Role::Join, Role::Agent] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert!(valid_token_name("ci-deploy") && !valid_token_name("a b") && !valid_token_name(""));
    }

    #[test]
    fn an_address_that_keeps_failing_is_refused_for_the_rest_of_its_window() {
        let f = FailedAuth::new(3, Duration::from_secs(60));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..2 {
            f.fail(ip, t0);
        }
        assert_eq!(f.blocked(ip, t0), None);
        f.fail(ip, t0);
        assert_eq!(
            f.blocked(ip, t0 + Duration::from_secs(10)),
            Some(Duration::from_secs(50))
        );
        assert_eq!(
            f.blocked(other, t0),
            None,
            "other addresses are not affected"
        );
        assert_eq!(f.blocked(ip, t0 + Duration::from_secs(60)), None);
        // A new window starts from zero.
        f.fail(ip, t0 + Duration::from_secs(61));
        assert_eq!(f.blocked(ip, t0 + Duration::from_secs(61)), None);
    }
}

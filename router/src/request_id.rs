//! X-Request-Id: keep a sensible client value, otherwise make a fresh one.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Heroku's rule: 20-200 characters of `[A-Za-z0-9+/=-]`.
pub(crate) fn is_valid(id: &str) -> bool {
    (20..=200).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-'))
}

/// A UUID-shaped id. Unique within the process (counter) and unpredictable across processes
/// (random hash keys), without pulling in a random number crate.
pub(crate) fn generate() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    let keys = KEYS.get_or_init(RandomState::new);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let now = dyno_shared::time::now_micros();
    let hex = format!(
        "{:016x}{:016x}",
        keys.hash_one((now, n, 1u8)),
        keys.hash_one((now, n, 2u8))
    );
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_and_generates() {
        assert!(is_valid("abcdefghij0123456789"));
        assert!(is_valid("a+b/c=d-e".repeat(5).as_str()));
        assert!(!is_valid("short"));
        assert!(!is_valid(&"a".repeat(201)));
        assert!(!is_valid("has spaces in it, quite a few"));
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert!(is_valid(&a));
    }
}

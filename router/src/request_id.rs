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

/// A UUID-shaped id. Unique within the process (a counter through a bijective mix) and
/// unpredictable across processes (random keys), without a random number crate or a hash per
/// request.
#[cfg(test)]
pub(crate) fn generate() -> String {
    let mut id = String::with_capacity(36);
    push_generated(&mut id);
    id
}

/// `generate`, appended to `out`.
pub(crate) fn push_generated(to: &mut String) {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static KEYS: OnceLock<(u64, u64)> = OnceLock::new();
    let &(k1, k2) = KEYS.get_or_init(|| {
        let state = RandomState::new();
        (state.hash_one(1u8), state.hash_one(2u8))
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let hi = mix(n ^ k1);
    let lo = mix(n.wrapping_add(k2)) ^ k1.rotate_left(17);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Where each byte's two digits go: a UUID's 8-4-4-4-12 groups.
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&hi.to_be_bytes());
    bytes[8..].copy_from_slice(&lo.to_be_bytes());
    let mut out = [b'-'; 36];
    for (byte, at) in bytes.into_iter().zip(AT) {
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0xf)];
    }
    // Hex digits and dashes only.
    to.push_str(std::str::from_utf8(&out).unwrap_or_default());
}

/// splitmix64's finalizer: a bijection on u64, so distinct counters give distinct ids.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
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
        let dashes: Vec<usize> = a.match_indices('-').map(|(i, _)| i).collect();
        assert_eq!(dashes, [8, 13, 18, 23], "{a}");
        let many: std::collections::HashSet<String> = (0..10_000).map(|_| generate()).collect();
        assert_eq!(many.len(), 10_000);
    }
}

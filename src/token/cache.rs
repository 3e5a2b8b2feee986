//! A cache of verified tokens, so that a token seen again costs a hash and a
//! lookup instead of a signature verification.
//!
//! Entries are keyed by the SHA-256 of the whole token and hold its verified
//! claims. An entry is used only while the token is unexpired and the issuer's
//! key set is the one that verified it (compared by fingerprint): when a key
//! set changes, its tokens are verified again. Only successful validations are
//! cached; the policy still runs on every request.
//!
//! Reads never wait: the map is lock-free (`papaya`), and eviction, which
//! scans the map, runs on one inserting thread at a time while others go on.
//! The cache is bounded in entries and in estimated bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::TokenClaims;

/// A SHA-256 digest of a token.
pub type TokenHash = [u8; 32];

/// Limits of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// At most this many entries; 0 turns the cache off.
    pub max_entries: usize,
    /// At most about this many bytes of entries.
    pub max_bytes: usize,
}

/// One verified token.
#[derive(Debug)]
pub struct CachedToken {
    /// Index of the issuer in the validator.
    pub issuer: usize,
    /// The verified claims.
    pub claims: Arc<TokenClaims>,
    /// Unusable from this time on (seconds since the epoch): `exp` plus skew.
    pub expires_at: i64,
    /// Fingerprint of the key set that verified it.
    pub keys: u64,
    size: usize,
}

/// The cache.
#[derive(Debug)]
pub struct TokenCache {
    map: papaya::HashMap<TokenHash, Arc<CachedToken>>,
    limits: CacheLimits,
    bytes: AtomicUsize,
    evicting: AtomicBool,
    stats: Arc<CacheStats>,
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Lookups that found a usable entry.
    pub hits: AtomicUsize,
    /// Lookups that did not.
    pub misses: AtomicUsize,
    /// Entries removed to stay within the limits.
    pub evictions: AtomicUsize,
    /// Entries now (of the current configuration's cache).
    pub entries: AtomicUsize,
    /// Estimated bytes now.
    pub bytes: AtomicUsize,
}

/// The key of a token.
pub fn hash(token: &str) -> TokenHash {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

impl CachedToken {
    /// An entry that takes about `bytes` of heap (its claims, and the tree
    /// of its payload if the policy will read it), for the byte bound.
    pub fn new(
        issuer: usize,
        claims: Arc<TokenClaims>,
        expires_at: i64,
        keys: u64,
        bytes: usize,
    ) -> Self {
        Self {
            issuer,
            claims,
            expires_at,
            keys,
            // Plus the entry itself and its slot in the map.
            size: bytes + 256,
        }
    }
}

impl TokenCache {
    /// An empty cache that counts into `stats` (shared across reloads).
    pub fn new(limits: CacheLimits, stats: Arc<CacheStats>) -> Self {
        stats.entries.store(0, Ordering::Relaxed);
        stats.bytes.store(0, Ordering::Relaxed);
        Self {
            map: papaya::HashMap::new(),
            limits,
            bytes: AtomicUsize::new(0),
            evicting: AtomicBool::new(false),
            stats,
        }
    }

    /// Whether the cache is on.
    pub fn enabled(&self) -> bool {
        self.limits.max_entries > 0
    }

    /// The entry of a token, if present and `usable` (unexpired, same keys);
    /// counted as a hit, else as a miss.
    pub fn lookup(
        &self,
        key: &TokenHash,
        usable: impl FnOnce(&CachedToken) -> bool,
    ) -> Option<Arc<CachedToken>> {
        let found = self.map.pin().get(key).filter(|e| usable(e)).cloned();
        let counter = if found.is_some() {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Stores a verified token, evicting to stay within the limits.
    pub fn insert(&self, key: TokenHash, entry: CachedToken, now: i64) {
        if !self.enabled() {
            return;
        }
        let size = entry.size;
        let previous = self.map.pin().insert(key, Arc::new(entry)).map(|p| p.size);
        self.bytes.fetch_add(size, Ordering::Relaxed);
        if let Some(previous) = previous {
            self.bytes.fetch_sub(previous, Ordering::Relaxed);
        }
        if self.map.len() > self.limits.max_entries
            || self.bytes.load(Ordering::Relaxed) > self.limits.max_bytes
        {
            self.evict(now);
        }
        self.stats.entries.store(self.map.len(), Ordering::Relaxed);
        self.stats
            .bytes
            .store(self.bytes.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Removes expired entries, then others, until the cache is at 90% of its
    /// limits. One thread at a time; others skip it and go on.
    fn evict(&self, now: i64) {
        if self.evicting.swap(true, Ordering::Acquire) {
            return;
        }
        let entries_target = self.limits.max_entries - self.limits.max_entries / 10;
        let bytes_target = self.limits.max_bytes - self.limits.max_bytes / 10;
        let map = self.map.pin();
        for expired_only in [true, false] {
            let (start_len, start_bytes) = (self.map.len(), self.bytes.load(Ordering::Relaxed));
            let mut removed_bytes = 0;
            let mut removed = 0;
            map.retain(|_, entry| {
                let over = start_len.saturating_sub(removed) > entries_target
                    || start_bytes.saturating_sub(removed_bytes) > bytes_target;
                let drop = (expired_only && entry.expires_at <= now) || (!expired_only && over);
                if drop {
                    removed += 1;
                    removed_bytes += entry.size;
                }
                !drop
            });
            self.bytes.fetch_sub(
                removed_bytes.min(self.bytes.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
            self.stats.evictions.fetch_add(removed, Ordering::Relaxed);
            if self.map.len() <= entries_target
                && self.bytes.load(Ordering::Relaxed) <= bytes_target
            {
                break;
            }
        }
        self.evicting.store(false, Ordering::Release);
    }

    /// Entries now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Estimated bytes of the entries.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The counters.
    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }
}

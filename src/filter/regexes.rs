//! Compiled regexes, kept by pattern. A filter's regex is compiled when the
//! filter is validated at submit time, again when a worker takes the job and
//! validates it against the source's schema, and again when the source turns
//! the filter into its query; and concurrent dashboards often send the same
//! pattern. The regex crate builds its automata up front, which cost about
//! an eighth of the CPU of 100 concurrent first chunks, so a pattern is
//! compiled once and the compiled regex (cheap to clone, safe to share
//! between threads) reused.
//!
//! The cache is a value, not a global: the app builds one [`RegexCache`] and
//! hands clones (which share it) to the job service and the source.

use std::sync::Arc;

use quick_cache::sync::{Cache, DefaultLifecycle};
use quick_cache::{DefaultHashBuilder, OptionsBuilder, UnitWeighter};
use regex::{Regex, RegexBuilder};

/// Patterns kept; past this many, the cache's policy picks which goes
/// (patterns used again are kept over patterns used once). A compiled regex
/// is a few kilobytes for the patterns dashboards send; validation caps each
/// at `Limits::regex_size_limit`, so the worst case is this many times that.
const KEPT: usize = 256;

/// The regex crate's own size limit, for patterns compiled without one.
const DEFAULT_SIZE_LIMIT: usize = 10 << 20;

#[derive(Clone)]
struct Compiled {
    regex: Regex,
    /// The size limit it compiled within.
    size_limit: usize,
}

/// Up to `KEPT` recently compiled patterns, with their regexes. Clones share
/// one cache.
#[derive(Clone)]
pub struct RegexCache {
    kept: Arc<Cache<String, Compiled, UnitWeighter>>,
}

impl Default for RegexCache {
    fn default() -> RegexCache {
        // One shard: each shard holds its own share of `KEPT`, so split
        // eight ways a shard of 32 would drop patterns while others had
        // room; a lookup is one hash probe next to a compile, so one lock is
        // not contended. The crate's `one_shard_cache` does the same; this
        // module stays self-contained for the fuzz crate, so builds its own.
        let options = OptionsBuilder::new()
            .shards(1)
            .estimated_items_capacity(KEPT)
            .weight_capacity(KEPT as u64)
            .build()
            .expect("both capacities are set");
        RegexCache {
            kept: Arc::new(Cache::with_options(
                options,
                UnitWeighter,
                DefaultHashBuilder::default(),
                DefaultLifecycle::default(),
            )),
        }
    }
}

impl std::fmt::Debug for RegexCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegexCache")
            .field("patterns", &self.kept.len())
            .finish()
    }
}

impl RegexCache {
    /// `pattern` compiled within `size_limit` bytes (also the lazy DFA's
    /// cache limit): the check that a submitted regex is acceptable.
    pub fn within(&self, pattern: &str, size_limit: usize) -> Result<Regex, regex::Error> {
        // One compiled within a smaller limit also fits this one.
        if let Some(c) = self.kept.get(pattern)
            && c.size_limit <= size_limit
        {
            return Ok(c.regex);
        }
        let regex = RegexBuilder::new(pattern)
            .size_limit(size_limit)
            .dfa_size_limit(size_limit)
            .build()?;
        self.keep(pattern, size_limit, &regex);
        Ok(regex)
    }

    /// `pattern` compiled, within whatever limit it was first checked
    /// against: for filters that were validated already.
    pub fn any(&self, pattern: &str) -> Result<Regex, regex::Error> {
        if let Some(c) = self.kept.get(pattern) {
            return Ok(c.regex);
        }
        let regex = Regex::new(pattern)?;
        self.keep(pattern, DEFAULT_SIZE_LIMIT, &regex);
        Ok(regex)
    }

    fn keep(&self, pattern: &str, size_limit: usize, regex: &Regex) {
        let compiled = Compiled {
            regex: regex.clone(),
            size_limit,
        };
        self.kept.insert(pattern.to_owned(), compiled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_regex_is_reused_only_within_its_limit() {
        let cache = RegexCache::default();
        let pattern = "^kept-[a-z]{3}$";
        let first = cache.within(pattern, 1 << 20).unwrap();
        assert!(first.is_match("kept-abc"));
        // The same compiled regex comes back (clones share their program).
        assert_eq!(cache.any(pattern).unwrap().as_str(), pattern);
        // A stricter limit compiles again, and can refuse.
        let big = "[a-z]{200}";
        cache.within(big, 1 << 20).unwrap();
        assert!(matches!(
            cache.within(big, 1000),
            Err(regex::Error::CompiledTooBig(1000))
        ));
    }

    #[test]
    fn at_most_kept_patterns_stay_and_the_newest_is_one() {
        let cache = RegexCache::default();
        let prefix = "bounded-";
        for n in 0..KEPT + 10 {
            cache.any(&format!("{prefix}{n}")).unwrap();
        }
        assert_eq!(cache.kept.len(), KEPT);
        assert!(cache.kept.contains_key(&format!("{prefix}{}", KEPT + 9)));
        let gone = (0..KEPT + 10)
            .filter(|n| !cache.kept.contains_key(&format!("{prefix}{n}")))
            .count();
        assert_eq!(gone, 10);
    }

    #[test]
    fn clones_share_one_cache() {
        let cache = RegexCache::default();
        let clone = cache.clone();
        clone.any("shared-[0-9]+").unwrap();
        assert!(cache.kept.contains_key("shared-[0-9]+"));
        // Separate caches do not.
        assert!(RegexCache::default().kept.is_empty());
    }
}

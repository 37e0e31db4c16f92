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

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use regex::{Regex, RegexBuilder};

/// Patterns kept, oldest out first. A compiled regex is a few kilobytes
/// for the patterns dashboards send; validation caps each at
/// `Limits::regex_size_limit`, so the worst case is this many times that.
const KEPT: usize = 256;

/// The regex crate's own size limit, for patterns compiled without one.
const DEFAULT_SIZE_LIMIT: usize = 10 << 20;

struct Compiled {
    regex: Regex,
    /// The size limit it compiled within.
    size_limit: usize,
}

#[derive(Default)]
struct Kept {
    by_pattern: HashMap<String, Compiled>,
    /// Patterns, oldest first.
    order: VecDeque<String>,
}

/// The last `KEPT` patterns compiled, with their regexes. Clones share one
/// cache.
#[derive(Clone, Default)]
pub struct RegexCache {
    kept: Arc<Mutex<Kept>>,
}

impl std::fmt::Debug for RegexCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegexCache")
            .field("patterns", &self.kept().order.len())
            .finish()
    }
}

impl RegexCache {
    fn kept(&self) -> MutexGuard<'_, Kept> {
        // Each change under the lock is a single operation, so the cache is
        // valid whatever a panicking holder was doing.
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `pattern` compiled within `size_limit` bytes (also the lazy DFA's
    /// cache limit): the check that a submitted regex is acceptable.
    pub fn within(&self, pattern: &str, size_limit: usize) -> Result<Regex, regex::Error> {
        // One compiled within a smaller limit also fits this one.
        if let Some(c) = self.kept().by_pattern.get(pattern)
            && c.size_limit <= size_limit
        {
            return Ok(c.regex.clone());
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
        if let Some(c) = self.kept().by_pattern.get(pattern) {
            return Ok(c.regex.clone());
        }
        let regex = Regex::new(pattern)?;
        self.keep(pattern, DEFAULT_SIZE_LIMIT, &regex);
        Ok(regex)
    }

    fn keep(&self, pattern: &str, size_limit: usize, regex: &Regex) {
        let mut kept = self.kept();
        let compiled = Compiled {
            regex: regex.clone(),
            size_limit,
        };
        if let Some(old) = kept.by_pattern.get_mut(pattern) {
            *old = compiled;
            return;
        }
        kept.by_pattern.insert(pattern.to_owned(), compiled);
        kept.order.push_back(pattern.to_owned());
        while kept.order.len() > KEPT {
            if let Some(oldest) = kept.order.pop_front() {
                kept.by_pattern.remove(&oldest);
            }
        }
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
    fn the_oldest_patterns_go_first() {
        let cache = RegexCache::default();
        let prefix = "oldest-first-";
        for n in 0..KEPT + 10 {
            cache.any(&format!("{prefix}{n}")).unwrap();
        }
        let kept = cache.kept();
        assert_eq!(kept.by_pattern.len(), KEPT);
        assert_eq!(kept.by_pattern.len(), kept.order.len());
        assert!(!kept.by_pattern.contains_key(&format!("{prefix}0")));
        assert!(kept.by_pattern.contains_key(&format!("{prefix}10")));
    }

    #[test]
    fn clones_share_one_cache() {
        let cache = RegexCache::default();
        let clone = cache.clone();
        clone.any("shared-[0-9]+").unwrap();
        assert!(cache.kept().by_pattern.contains_key("shared-[0-9]+"));
        // Separate caches do not.
        assert!(RegexCache::default().kept().by_pattern.is_empty());
    }
}

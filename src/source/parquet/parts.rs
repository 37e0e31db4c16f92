//! What a query runs, in order: its *parts*, each a segment or a time
//! window of one, and how the first segment is cut into windows.
//!
//! Where the files' pages are in time order (the page index says), the
//! first segment is cut into windows by rows (`row_windows`): a page or so
//! first, growing to about `WindowRows::max`. A first chunk then waits for
//! a page of decoding whatever the data's density. Otherwise it is cut by
//! time (`first_windows`). A later segment is cut by rows too when the
//! query's filter matches so many of the rows read so far that the segment
//! whole would hold more than a window's worth (`later_windows`); else it
//! runs whole.

use std::sync::atomic::{AtomicU64, Ordering};

use super::layout::Segment;

/// How many time windows the first segment of a query is cut into, newest
/// (or oldest, ascending) first and growing by `FIRST_WINDOW_GROWTH` each:
/// the first chunk then waits for a small slice of a day instead of the whole
/// day, while files sorted by time let the page index skip the rest.
pub(super) const FIRST_WINDOWS: u32 = 4;
const FIRST_WINDOW_GROWTH: i64 = 4;

/// How many rows a query's windows hold, where the files' pages are in time
/// order: `first` for the first, each next `ROW_WINDOW_GROWTH` times the one
/// before, up to `max`. Counted in the files' rows, before the filter, and
/// a window ends at the first page edge past its size: where pages are
/// large (a file without a page index has one per row group), files of the
/// segment overlap in time, or many rows share a time, windows hold more.
///
/// Cut by time, a first window held ten times the rows at ten times the
/// rows a day, and the first chunk waited for them; cut by rows, it costs
/// a page or so of decoding whatever the data's density.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct WindowRows {
    pub(super) first: usize,
    pub(super) max: usize,
}

/// A page of the demo data (2,048 rows) first, then 8,192 rows at most
/// (about 1 MiB decoded, all columns): a query holds the matches of at
/// most three windows (the one it sends from and `READ_AHEAD`).
pub(super) const WINDOW_ROWS: WindowRows = WindowRows {
    first: 2 * 1024,
    max: 8 * 1024,
};
const ROW_WINDOW_GROWTH: usize = 4;

/// One query of a job: a segment, optionally narrowed to `[from_us, to_us)`.
#[derive(Clone)]
pub(super) struct Part {
    pub(super) segment: Segment,
    pub(super) window: Option<(i64, i64)>,
}

/// The part of `[from_us, to_us)` that `seg` covers, half-open.
fn bounds(seg: &Segment, from_us: i64, to_us: i64) -> (i64, i64) {
    (
        seg.min_us.max(from_us),
        seg.max_us.saturating_add(1).min(to_us),
    )
}

/// Cuts `seg`, restricted to `[from_us, to_us)`, into windows that grow away
/// from the end results start at. Windows are half-open and disjoint, so
/// rows with equal times always fall in the same one and order is kept.
pub(super) fn first_windows(seg: &Segment, from_us: i64, to_us: i64, asc: bool) -> Vec<Part> {
    let (lo, hi) = bounds(seg, from_us, to_us);
    let span = hi.saturating_sub(lo);
    let total: i64 = (0..FIRST_WINDOWS).map(|k| FIRST_WINDOW_GROWTH.pow(k)).sum();
    let unit = span / total;
    if unit < 1 {
        return vec![Part {
            segment: seg.clone(),
            window: None,
        }];
    }
    let mut parts = Vec::new();
    let mut covered = 0i64;
    for k in 0..FIRST_WINDOWS {
        let width = if k + 1 == FIRST_WINDOWS {
            span - covered
        } else {
            unit * FIRST_WINDOW_GROWTH.pow(k)
        };
        let window = if asc {
            (lo + covered, lo + covered + width)
        } else {
            (hi - covered - width, hi - covered)
        };
        covered += width;
        parts.push(Part {
            segment: seg.clone(),
            window: Some(window),
        });
    }
    parts
}

/// Cuts `seg`, restricted to `[from_us, to_us)`, into time windows of about
/// `rows` rows each (see [`WindowRows`]), in the order results come:
/// newest first, or oldest first when `asc`. `None` when a file's pages
/// are not in time order (a window would then read most pages): the caller
/// cuts by time instead.
///
/// Windows are half-open and disjoint, cut at page edges; a window reads
/// every page its range overlaps, so rows of equal time that span two
/// pages stay in one window and order is kept.
pub(super) fn row_windows(
    seg: &Segment,
    (from_us, to_us): (i64, i64),
    asc: bool,
    rows: WindowRows,
) -> Option<Vec<Part>> {
    let (lo, hi) = bounds(seg, from_us, to_us);
    let mut pages = Vec::new();
    for file in &seg.files {
        pages.extend(file.ordered_pages(lo, hi)?);
    }
    // In the order results come: by first time, or by last time newest first.
    if asc {
        pages.sort_by_key(|p| p.min_us);
    } else {
        pages.sort_by_key(|p| std::cmp::Reverse(p.max_us));
    }
    let window = |a: i64, b: i64| Part {
        segment: seg.clone(),
        window: Some(if asc { (a, b) } else { (b, a) }),
    };
    // `near` is where the next window starts, `far` where the range ends.
    let (mut near, far) = if asc { (lo, hi) } else { (hi, lo) };
    let (mut size, mut taken) = (rows.first.max(1), 0);
    let mut parts = Vec::new();
    for page in pages {
        taken += page.rows;
        if taken < size {
            continue;
        }
        // This page's far edge: its rows are in the window, the next ones not.
        let cut = if asc {
            page.max_us.saturating_add(1)
        } else {
            page.min_us
        };
        let inside = if asc {
            near < cut && cut < far
        } else {
            far < cut && cut < near
        };
        if inside {
            parts.push(window(near, cut));
            near = cut;
            taken = 0;
            size = size.saturating_mul(ROW_WINDOW_GROWTH).min(rows.max.max(1));
        }
    }
    if near != far {
        parts.push(window(near, far));
    }
    Some(parts)
}

/// How many rows a query's windows read directly have matched and
/// scanned so far (counted before the filter, whole pages): how selective
/// its filter is, for cutting the segments after the first.
#[derive(Debug, Default)]
pub(super) struct Selectivity {
    matched: AtomicU64,
    scanned: AtomicU64,
}

impl Selectivity {
    pub(super) fn add(&self, matched: u64, scanned: u64) {
        self.matched.fetch_add(matched, Ordering::Relaxed);
        self.scanned.fetch_add(scanned, Ordering::Relaxed);
    }

    /// Rows a window should span to match about `matches` of them, at
    /// least `matches`; that many when nothing was scanned yet (no sign
    /// the filter is selective), unbounded when nothing matched.
    fn rows_for(&self, matches: usize) -> usize {
        let matched = self.matched.load(Ordering::Relaxed);
        let scanned = self.scanned.load(Ordering::Relaxed);
        if scanned == 0 {
            return matches;
        }
        if matched == 0 {
            return usize::MAX;
        }
        let rows = u128::from(scanned) * matches as u128 / u128::from(matched);
        usize::try_from(rows).unwrap_or(usize::MAX).max(matches)
    }
}

/// Cuts a segment after the first, restricted to `[from_us, to_us)`, into
/// windows of rows sized so each matches about `matches` rows, judging by
/// `seen`; `None` when one window would span the whole segment (it then
/// runs whole, planned: DataFusion scans a whole day faster than windows
/// read directly) or its pages are not in time order.
///
/// A part holds its matches sorted until they are sent, and a query runs
/// `READ_AHEAD` parts ahead: an unselective query's whole days held 62 MiB
/// a query, its windows hold about 5 (docs/PERFORMANCE.md, target 7),
/// while a selective one's days still run whole.
pub(super) fn later_windows(
    seg: &Segment,
    range: (i64, i64),
    asc: bool,
    seen: &Selectivity,
    matches: usize,
) -> Option<Vec<Part>> {
    let rows = seen.rows_for(matches.max(1));
    let parts = row_windows(
        seg,
        range,
        asc,
        WindowRows {
            first: rows,
            max: rows,
        },
    )?;
    (parts.len() > 1).then_some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use super::super::index::IndexedFile;
    use super::super::index::tests::demo_file;

    #[test]
    fn first_windows_cover_the_range_in_order_growing() {
        let seg = Segment {
            min_us: 1_000,
            max_us: 100_000,
            urls: vec![],
            files: vec![],
        };
        for asc in [false, true] {
            let parts = first_windows(&seg, 5_000, 90_000, asc);
            let windows: Vec<(i64, i64)> = parts.iter().map(|p| p.window.unwrap()).collect();
            assert_eq!(windows.len(), FIRST_WINDOWS as usize);
            let mut sorted = windows.clone();
            sorted.sort();
            assert_eq!(sorted.first().unwrap().0, 5_000);
            assert_eq!(sorted.last().unwrap().1, 90_000);
            assert!(sorted.windows(2).all(|w| w[0].1 == w[1].0), "{sorted:?}");
            if asc {
                assert_eq!(windows, sorted);
            } else {
                assert_eq!(windows.iter().rev().copied().collect::<Vec<_>>(), sorted);
            }
            let widths: Vec<i64> = windows.iter().map(|(a, b)| b - a).collect();
            assert!(widths.windows(2).all(|w| w[0] <= w[1]), "{widths:?}");
        }
        // Too narrow to cut: one part, unrestricted.
        let parts = first_windows(&seg, 5_000, 5_010, false);
        assert_eq!(parts.len(), 1);
        assert!(parts[0].window.is_none());
    }

    /// A segment of one demo day of `rows` rows (pages of 2,048 rows).
    fn demo_segment(rows: u32) -> (tempfile::TempDir, Segment) {
        let (dir, path) = demo_file(rows);
        let file = Arc::new(IndexedFile::open(&path, "ts").unwrap());
        let all = file.ordered_pages(i64::MIN, i64::MAX).unwrap();
        let segment = Segment {
            min_us: all.iter().map(|p| p.min_us).min().unwrap(),
            max_us: all.iter().map(|p| p.max_us).max().unwrap(),
            urls: vec![],
            files: vec![file],
        };
        (dir, segment)
    }

    #[test]
    fn row_windows_cover_the_range_in_order_growing_by_pages() {
        let (_dir, seg) = demo_segment(40_000);
        let (from, to) = (seg.min_us + 1_000_000, seg.max_us);
        let rows = WindowRows {
            first: 2_048,
            max: 8_192,
        };
        for asc in [false, true] {
            let parts = row_windows(&seg, (from, to), asc, rows).unwrap();
            let windows: Vec<(i64, i64)> = parts.iter().map(|p| p.window.unwrap()).collect();
            let mut sorted = windows.clone();
            sorted.sort();
            assert_eq!(sorted.first().unwrap().0, from);
            assert_eq!(sorted.last().unwrap().1, to);
            assert!(sorted.windows(2).all(|w| w[0].1 == w[1].0), "{sorted:?}");
            if asc {
                assert_eq!(windows, sorted);
            } else {
                assert_eq!(windows.iter().rev().copied().collect::<Vec<_>>(), sorted);
            }
            // Rows a window reads: the pages it overlaps.
            let read: Vec<usize> = windows
                .iter()
                .map(|&(a, b)| {
                    let pages = seg.files[0].ordered_pages(a, b).unwrap();
                    pages.iter().map(|p| p.rows).sum()
                })
                .collect();
            // 1, then 4, then at most 4 pages (plus a shared edge page).
            assert!(read[0] <= 2 * 2_048, "{read:?}");
            assert!(
                read[1] >= rows.max / 2 && read[1] <= rows.max + 2 * 2_048,
                "{read:?}"
            );
            assert!(read.iter().all(|&r| r <= rows.max + 2 * 2_048), "{read:?}");
            assert!(windows.len() >= 5, "{windows:?}");
        }
        // A range inside one page: one window, the whole range.
        let parts = row_windows(&seg, (from, from + 10), false, rows).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].window, Some((from, from + 10)));
    }

    #[test]
    fn later_segments_are_cut_only_where_a_whole_one_would_hold_too_many_matches() {
        let (_dir, seg) = demo_segment(40_000);
        let range = (seg.min_us, seg.max_us + 1);
        let windows = |seen: &Selectivity, matches: usize| {
            later_windows(&seg, range, false, seen, matches).map(|p| p.len())
        };
        // Nothing read yet: windows of `matches` rows, as if every row matched.
        let unknown = Selectivity::default();
        assert!(windows(&unknown, 8_192).is_some_and(|n| n >= 4));
        // Every row matched so far: the same.
        let unselective = Selectivity::default();
        unselective.add(10_000, 10_000);
        assert_eq!(windows(&unselective, 8_192), windows(&unknown, 8_192));
        // A tenth matched: windows ten times longer, so two cover the day.
        let tenth = Selectivity::default();
        tenth.add(1_000, 10_000);
        assert_eq!(windows(&tenth, 2_048), Some(2));
        // One row in a hundred, or none: the day runs whole.
        let selective = Selectivity::default();
        selective.add(100, 10_000);
        assert_eq!(windows(&selective, 8_192), None);
        let none = Selectivity::default();
        none.add(0, 10_000);
        assert_eq!(windows(&none, 1), None);
        // A day that holds fewer rows than a window: whole.
        assert_eq!(windows(&unselective, 40_000), None);
    }
}

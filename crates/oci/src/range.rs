//! Byte ranges: the `Content-Range` of a chunked upload (`<start>-<end>`, inclusive) and the
//! single `Range` of a blob read (`bytes=a-b`, `bytes=a-`, `bytes=-n`).

/// An inclusive chunk range from a PATCH `Content-Range` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRange {
    pub start: u64,
    pub end: u64,
}

impl ChunkRange {
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Parses `<start>-<end>` (the spec's form) and also `bytes <start>-<end>/<total|*>` (RFC
/// form, sent by some clients). `None` for anything else, or an end before the start.
pub fn parse_content_range(s: &str) -> Option<ChunkRange> {
    let s = s.trim();
    let s = s
        .strip_prefix("bytes ")
        .or_else(|| s.strip_prefix("bytes="))
        .unwrap_or(s);
    let s = match s.split_once('/') {
        Some((r, total)) if total == "*" || digits(total).is_some() => r,
        Some(_) => return None,
        None => s,
    };
    let (a, b) = s.split_once('-')?;
    let start = digits(a)?;
    let end = digits(b)?;
    (end >= start).then_some(ChunkRange { start, end })
}

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// What a `Range` request header asks of a blob of known size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: serve the whole blob (absent, malformed, or several ranges — RFC 9110
    /// lets a server ignore a Range it does not support).
    Full,
    /// `start..=end`, within the blob.
    Partial { start: u64, end: u64 },
    /// A well-formed range that does not overlap the blob: 416.
    Unsatisfiable,
}

pub fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(h) = header else {
        return RangeRequest::Full;
    };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    match (a.is_empty(), b.is_empty()) {
        (true, true) => RangeRequest::Full,
        (true, false) => match digits(b) {
            None => RangeRequest::Full,
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if size == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Partial {
                start: size.saturating_sub(n),
                end: size - 1,
            },
        },
        (false, _) => {
            let Some(start) = digits(a) else {
                return RangeRequest::Full;
            };
            let end = if b.is_empty() {
                u64::MAX
            } else {
                match digits(b) {
                    Some(e) if e >= start => e,
                    _ => return RangeRequest::Full,
                }
            };
            if start >= size {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Partial {
                    start,
                    end: end.min(size - 1),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("0-99"),
            Some(ChunkRange { start: 0, end: 99 })
        );
        assert_eq!(
            parse_content_range("bytes 100-199/*"),
            Some(ChunkRange {
                start: 100,
                end: 199
            })
        );
        assert_eq!(
            parse_content_range("bytes=5-5"),
            Some(ChunkRange { start: 5, end: 5 })
        );
        for bad in [
            "",
            "-",
            "5-",
            "-5",
            "9-1",
            "a-b",
            "0-1/x",
            "0--1",
            " 1 - 2",
            "99999999999999999999-1",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn ranges() {
        use RangeRequest::*;
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(
            parse_range(Some("bytes=0-4"), 10),
            Partial { start: 0, end: 4 }
        );
        assert_eq!(
            parse_range(Some("bytes=5-"), 10),
            Partial { start: 5, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-3"), 10),
            Partial { start: 7, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-30"), 10),
            Partial { start: 0, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=2-100"), 10),
            Partial { start: 2, end: 9 }
        );
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-0"), 0), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), Full);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Full);
    }

    proptest! {
        #[test]
        fn partial_ranges_stay_inside(h in ".{0,30}", size in 0u64..1000) {
            if let RangeRequest::Partial { start, end } = parse_range(Some(&h), size) {
                prop_assert!(start <= end && end < size);
            }
        }

        #[test]
        fn content_range_round_trips(a in 0u64..1<<40, n in 1u64..1<<30) {
            let r = parse_content_range(&format!("{}-{}", a, a + n - 1)).unwrap();
            prop_assert_eq!(r.len(), n);
        }
    }
}

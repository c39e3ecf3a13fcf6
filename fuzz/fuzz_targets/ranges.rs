//! Fuzzes the byte ranges clients send: a chunk's `Content-Range` and a read's `Range`.
//!
//! Beyond not panicking, each parser keeps its documented promise: a chunk range never ends
//! before it starts (so its length cannot overflow) and prints back to itself; a partial
//! read lies inside the blob and, written as `bytes=<start>-<end>`, asks for the same bytes.

#![no_main]

use berth_oci::range::{parse_content_range, parse_range, RangeRequest};
use libfuzzer_sys::fuzz_target;

/// The largest position the range grammar reads: 19 digits.
const MAX_WRITTEN: u64 = 9_999_999_999_999_999_999;

fuzz_target!(|data: &[u8]| {
    // The first 8 bytes are the blob's size; the rest is the header.
    let mut size = [0u8; 8];
    let n = data.len().min(8);
    size[..n].copy_from_slice(&data[..n]);
    let size = u64::from_le_bytes(size);
    let Ok(header) = std::str::from_utf8(&data[n..]) else {
        return;
    };

    if let Some(r) = parse_content_range(header) {
        assert!(r.start <= r.end);
        assert!(r.len() >= 1 && !r.is_empty());
        assert_eq!(r.len(), r.end - r.start + 1);
        let printed = format!("{}-{}", r.start, r.end);
        assert_eq!(parse_content_range(&printed), Some(r));
    }

    assert_eq!(parse_range(None, size), RangeRequest::Full);
    // Small sizes make the edges (empty blob, range past the end) common.
    for size in [size, size % 1024, 0, 1, u64::MAX] {
        match parse_range(Some(header), size) {
            RangeRequest::Partial { start, end } => {
                assert!(start <= end, "{header:?} on {size}: {start} > {end}");
                assert!(end < size, "{header:?} on {size}: ends at {end}");
                // Positions are at most 19 digits (so a chunk's length cannot overflow); only
                // a blob over 10^19 bytes could end past that, and none is.
                if end > MAX_WRITTEN {
                    continue;
                }
                let exact = format!("bytes={start}-{end}");
                assert_eq!(
                    parse_range(Some(&exact), size),
                    RangeRequest::Partial { start, end }
                );
            }
            RangeRequest::Unsatisfiable => {
                // Only a well-formed byte range can be unsatisfiable.
                assert!(header.trim().starts_with("bytes="));
            }
            RangeRequest::Full => {}
        }
    }
});

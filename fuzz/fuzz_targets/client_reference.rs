//! Fuzzes the client's image references (`nginx`, `localhost:5000/a/b:v1@sha256:…`), typed
//! by people and read from archives and manifests' annotations.
//!
//! Nothing may panic, and a parsed reference is already normalised: printed, it parses back
//! to the same reference, and its parts (what the client asks the registry for, its host)
//! are usable.

#![no_main]

use berth_client::reference::{is_local_host, ImageRef};
use berth_oci::Reference;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = is_local_host(s);
    for default_tag in [true, false] {
        let Ok(r) = ImageRef::parse(s, default_tag) else {
            continue;
        };
        let printed = r.to_string();
        let back = ImageRef::parse(&printed, default_tag);
        assert_eq!(back.as_ref().ok(), Some(&r), "{s:?} printed as {printed:?}");
        if default_tag {
            assert!(r.tag.is_some() || r.digest.is_some());
        }
        assert!(r.reference().parse::<Reference>().is_ok());
        assert!(!r.api_host().is_empty());
        assert!(printed.starts_with(&r.repository()));
        let _ = r.familiar_repository();
        let _ = r.is_local();
        if let Some(d) = &r.digest {
            assert_eq!(&r.with_digest(d.clone()).digest, &r.digest);
        }
    }
});

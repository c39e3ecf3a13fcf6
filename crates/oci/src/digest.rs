//! Content digests (`algorithm:encoded`) and the streaming hasher that computes them.
//!
//! The hasher's midstate can be saved and restored ([`DigestHasher::save`]) so that a chunked
//! upload resumes after a restart, or on another node, without re-reading the bytes it has.

use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest as _, Sha256, Sha512};
use std::fmt;
use std::str::FromStr;

/// A digest algorithm this registry can verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the hex-encoded digest.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    pub fn parse(s: &str) -> Option<Algorithm> {
        match s {
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

/// Why a string is not a usable digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("invalid digest {0:?}")]
    Invalid(String),
    #[error("unsupported digest algorithm {0:?}")]
    Unsupported(String),
}

/// A validated digest: a known algorithm and its lowercase hex encoding.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The encoded part, after the colon.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Digest of a complete byte slice with the given algorithm.
    pub fn of(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut h = DigestHasher::new(algorithm);
        h.update(bytes);
        h.finish()
    }

    /// sha256 of a byte slice: how manifests pushed by tag are addressed.
    pub fn sha256(bytes: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, bytes)
    }
}

/// `[a-z0-9]+([+._-][a-z0-9]+)*`: the spec's grammar for an algorithm, known or not.
fn algorithm_grammar(s: &str) -> bool {
    !s.is_empty()
        && s.split(['+', '.', '_', '-']).all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Digest, DigestError> {
        let invalid = || DigestError::Invalid(truncate(s));
        let (alg, enc) = s.split_once(':').ok_or_else(invalid)?;
        if !algorithm_grammar(alg)
            || enc.is_empty()
            || !enc
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b))
        {
            return Err(invalid());
        }
        let algorithm =
            Algorithm::parse(alg).ok_or_else(|| DigestError::Unsupported(truncate(alg)))?;
        if enc.len() != algorithm.hex_len()
            || !enc.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(invalid());
        }
        Ok(Digest {
            algorithm,
            hex: enc.to_owned(),
        })
    }
}

/// Error messages quote user input; keep them short.
fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A running hash over a stream of bytes, with the byte count.
#[derive(Clone)]
pub struct DigestHasher {
    inner: Inner,
    len: u64,
}

#[derive(Clone)]
enum Inner {
    Sha256(Sha256),
    Sha512(Sha512),
}

/// Version tag of the saved-state format; bump when the layout changes so old states are
/// ignored (and the bytes re-hashed) rather than misread.
const STATE_VERSION: u8 = 1;

/// The most bytes a saved state may claim: sha256 counts the message in bits in 64 bits, so
/// no hash covers more than 2^61 - 1 bytes, and a larger count can only be damage (it would
/// overflow the counters as soon as more bytes arrive).
const MAX_STATE_LEN: u64 = u64::MAX >> 3;

/// The byte count a serialised sha2 state holds. The state is the chaining value (8 words),
/// the number of compressed blocks (little-endian, 8 bytes for sha256, 16 for sha512), then
/// the buffer: one byte saying how many bytes it holds, and those bytes. `None` when the
/// count does not fit in a `u64`.
fn state_len(algorithm: Algorithm, state: &[u8]) -> Option<u64> {
    let (words, counter, block) = match algorithm {
        Algorithm::Sha256 => (32, 8, 64u128),
        Algorithm::Sha512 => (64, 16, 128u128),
    };
    let mut blocks = [0u8; 16];
    blocks[..counter].copy_from_slice(state.get(words..words + counter)?);
    let buffered = u128::from(*state.get(words + counter)?);
    let len = u128::from_le_bytes(blocks)
        .checked_mul(block)?
        .checked_add(buffered)?;
    u64::try_from(len).ok()
}

impl DigestHasher {
    pub fn new(algorithm: Algorithm) -> DigestHasher {
        let inner = match algorithm {
            Algorithm::Sha256 => Inner::Sha256(Sha256::new()),
            Algorithm::Sha512 => Inner::Sha512(Sha512::new()),
        };
        DigestHasher { inner, len: 0 }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self.inner {
            Inner::Sha256(_) => Algorithm::Sha256,
            Inner::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.inner {
            Inner::Sha256(h) => h.update(bytes),
            Inner::Sha512(h) => h.update(bytes),
        }
        self.len += bytes.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> Digest {
        let algorithm = self.algorithm();
        let hex = match self.inner {
            Inner::Sha256(h) => hex::encode(h.finalize()),
            Inner::Sha512(h) => hex::encode(h.finalize()),
        };
        Digest { algorithm, hex }
    }

    /// The midstate as text: `v<version>:<algorithm>:<length>:<hex state>`.
    pub fn save(&self) -> String {
        let state = match &self.inner {
            Inner::Sha256(h) => hex::encode(h.serialize()),
            Inner::Sha512(h) => hex::encode(h.serialize()),
        };
        format!(
            "v{STATE_VERSION}:{}:{}:{state}",
            self.algorithm().as_str(),
            self.len
        )
    }

    /// Restores a state written by [`DigestHasher::save`]; `None` when it is from another
    /// version or damaged, in which case the caller re-hashes the stored bytes.
    pub fn restore(saved: &str) -> Option<DigestHasher> {
        let mut parts = saved.split(':');
        if parts.next()? != format!("v{STATE_VERSION}") {
            return None;
        }
        let algorithm = Algorithm::parse(parts.next()?)?;
        let len: u64 = parts.next()?.parse().ok()?;
        let state = hex::decode(parts.next()?).ok()?;
        if parts.next().is_some() {
            return None;
        }
        // The count written beside the state must be the one inside it: a state that
        // disagrees is damaged, and one past the hash's limit would overflow on the next byte.
        if len > MAX_STATE_LEN || state_len(algorithm, &state) != Some(len) {
            return None;
        }
        let inner = match algorithm {
            Algorithm::Sha256 => {
                Inner::Sha256(Sha256::deserialize(state.as_slice().try_into().ok()?).ok()?)
            }
            Algorithm::Sha512 => {
                Inner::Sha512(Sha512::deserialize(state.as_slice().try_into().ok()?).ok()?)
            }
        };
        Some(DigestHasher { inner, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_prints() {
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(Digest::sha256(b""), d);
        let d512 = Digest::of(Algorithm::Sha512, b"abc");
        assert_eq!(d512.hex().len(), 128);
        assert_eq!(d512.to_string().parse::<Digest>().unwrap(), d512);
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            ":abc",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c442",
            "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:../../../../etc/passwd",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85g",
        ] {
            assert!(
                matches!(bad.parse::<Digest>(), Err(DigestError::Invalid(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            "md5:abcdef".parse::<Digest>(),
            Err(DigestError::Unsupported(_))
        ));
        assert!(matches!(
            "sha3+b64:abc=".parse::<Digest>(),
            Err(DigestError::Unsupported(_))
        ));
    }

    #[test]
    fn saved_state_resumes_the_same_hash() {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
            let mut h = DigestHasher::new(alg);
            h.update(&data[..33_333]);
            let saved = h.save();
            let mut r = DigestHasher::restore(&saved).unwrap();
            assert_eq!(r.len(), 33_333);
            r.update(&data[33_333..]);
            assert_eq!(r.finish(), Digest::of(alg, &data));
        }
        assert!(DigestHasher::restore("v0:sha256:0:00").is_none());
        assert!(DigestHasher::restore("v1:sha256:0:zz").is_none());
        assert!(DigestHasher::restore("v1:sha256:0:00").is_none());
    }

    /// The chaining value of a sha256 hasher that has seen nothing.
    const SHA256_INIT: &str = "67e6096a85ae67bb72f36e3c3af54fa57f520e518c68059babd9831f19cde05b";

    /// Found by fuzzing (fuzz target `names`): a well-formed state claiming u64::MAX bytes
    /// was restored, and the next `update` overflowed the byte count.
    #[test]
    fn restore_refuses_a_count_past_the_hash_limit() {
        let saved = format!(
            "v1:sha256:18446744073709551615:{SHA256_INIT}{}",
            "00".repeat(72)
        );
        assert!(DigestHasher::restore(&saved).is_none());
        // The same state with the count it holds is fine.
        let saved = format!("v1:sha256:0:{SHA256_INIT}{}", "00".repeat(72));
        assert_eq!(DigestHasher::restore(&saved).map(|h| h.len()), Some(0));
    }

    #[test]
    fn restore_refuses_a_count_the_state_disagrees_with() {
        let mut h = DigestHasher::new(Algorithm::Sha512);
        h.update(&[7; 300]);
        let saved = h.save();
        assert!(DigestHasher::restore(&saved).is_some());
        let edited = saved.replacen(":300:", ":299:", 1);
        assert!(DigestHasher::restore(&edited).is_none());
        // A block counter too large for any u64 count.
        let mut h = DigestHasher::new(Algorithm::Sha256);
        h.update(&[1; 64]);
        let saved = h.save();
        let (head, state) = saved.rsplit_once(':').unwrap();
        let huge = format!("{head}:{}ffffffffffffffff{}", &state[..64], &state[80..]);
        assert!(DigestHasher::restore(&huge.replacen(":64:", ":0:", 1)).is_none());
    }

    proptest! {
        #[test]
        fn any_string_parses_or_errors(s in ".{0,200}") {
            let _ = s.parse::<Digest>();
        }

        #[test]
        fn valid_sha256_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let d = Digest::sha256(&bytes);
            prop_assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        }
    }
}

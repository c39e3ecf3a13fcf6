//! Upload ids that prove by themselves which repository they were opened for and when, so
//! that opening a session (`POST`) writes nothing anywhere: the session is recorded only once
//! it holds bytes. Distribution signs its upload state for the same reason.
//!
//! ```text
//! <24 hex: 12 random bytes> <12 hex: creation time, Unix ms> <24 hex: tag>
//! tag = first 12 bytes of HMAC-SHA256(key, "berth-upload-1" 0 repo 0 random time)
//! ```
//!
//! The random part comes first: the fs store shards uploads by an id's first two characters.
//! The key is a server-wide secret kept in the metadata store, so every node verifies the ids
//! of every other.

use berth_oci::{RepoName, UploadId};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

const RANDOM: usize = 12;
const TIME_HEX: usize = 12;
const TAG: usize = 12;
const LEN: usize = 2 * RANDOM + TIME_HEX + 2 * TAG;
const DOMAIN: &[u8] = b"berth-upload-1";

/// The name of the secret in the metadata store.
pub(crate) const SECRET_NAME: &str = "upload-id-key";

/// A fresh secret for [`SECRET_NAME`]: 32 random bytes, hex.
pub(crate) fn new_secret() -> Result<String, String> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| format!("random key: {e}"))?;
    Ok(hex::encode(key))
}

/// Issues and verifies upload ids with one key.
pub(crate) struct IdKey {
    mac: Hmac<Sha256>,
}

impl IdKey {
    pub(crate) fn new(secret: &str) -> Result<IdKey, String> {
        let mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .map_err(|e| format!("upload id key: {e}"))?;
        Ok(IdKey { mac })
    }

    fn tag(&self, repo: &RepoName, random: &[u8], time: &str) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        for part in [
            DOMAIN,
            b"\0",
            repo.as_str().as_bytes(),
            b"\0",
            random,
            time.as_bytes(),
        ] {
            mac.update(part);
        }
        mac
    }

    /// A new id for a session of `repo` opened at `now_ms`.
    pub(crate) fn issue(&self, repo: &RepoName, now_ms: i64) -> Result<UploadId, String> {
        let mut random = [0u8; RANDOM];
        getrandom::fill(&mut random).map_err(|e| format!("random upload id: {e}"))?;
        let time = format!("{:012x}", now_ms.clamp(0, 0xffff_ffff_ffff));
        let tag = self.tag(repo, &random, &time).finalize().into_bytes();
        let id = format!("{}{time}{}", hex::encode(random), hex::encode(&tag[..TAG]));
        id.parse().map_err(|e| format!("upload id: {e}"))
    }

    /// When `id` was issued, if this key issued it for `repo`; `None` for any other id.
    pub(crate) fn verify(&self, repo: &RepoName, id: &UploadId) -> Option<i64> {
        let s = id.as_str();
        if s.len() != LEN || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let (random, rest) = s.split_at(2 * RANDOM);
        let (time, tag) = rest.split_at(TIME_HEX);
        let random = hex::decode(random).ok()?;
        let tag = hex::decode(tag).ok()?;
        // Constant time: the comparison must not tell an attacker how much of a tag was right.
        self.tag(repo, &random, time)
            .verify_truncated_left(&tag)
            .ok()?;
        i64::from_str_radix(time, 16).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_verify_only_for_their_repository_and_key() {
        let key = IdKey::new(&new_secret().unwrap()).unwrap();
        let repo: RepoName = "team/app".parse().unwrap();
        let id = key.issue(&repo, 1_700_000_000_123).unwrap();
        assert_eq!(id.as_str().len(), LEN);
        assert_eq!(key.verify(&repo, &id), Some(1_700_000_000_123));
        assert_ne!(key.issue(&repo, 1).unwrap(), key.issue(&repo, 1).unwrap());

        let other: RepoName = "team/other".parse().unwrap();
        assert_eq!(key.verify(&other, &id), None);
        assert_eq!(IdKey::new("another key").unwrap().verify(&repo, &id), None);

        // Any change to any part of the id breaks it.
        for i in 0..LEN {
            let mut s = id.as_str().as_bytes().to_vec();
            s[i] = if s[i] == b'0' { b'1' } else { b'0' };
            let forged: UploadId = String::from_utf8(s).unwrap().parse().unwrap();
            assert_eq!(key.verify(&repo, &forged), None, "changed at {i}");
        }
        for bad in [
            "x",
            "ABCDEF",
            &id.as_str()[1..],
            &id.as_str().to_uppercase(),
        ] {
            assert_eq!(key.verify(&repo, &bad.parse().unwrap()), None, "{bad}");
        }
    }
}

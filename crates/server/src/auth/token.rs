//! Bearer tokens: the JWTs Berth issues at its token endpoint (signed with an Ed25519 key
//! kept in the data directory, or one the configuration names) and those of trusted
//! external issuers, in the shape of the Docker registry token specification:
//!
//! ```text
//! { "iss", "sub", "aud", "exp", "nbf", "iat", "jti",
//!   "access": [ { "type": "repository", "name": "team/app", "actions": ["pull", "push"] } ] }
//! ```
//!
//! Refresh tokens (for `offline_token=true` and OAuth2 `grant_type=refresh_token`) are
//! signed by the same key with their own audience (`<service>:refresh`), so one can never
//! be used as the other.

use anyhow::{bail, Context};
use base64::Engine;
use berth_registry::access::Actions;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivatePkcs8KeyDer;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// The `iss` of Berth's own tokens.
pub const ISSUER: &str = "berth";

/// What a token grants on one resource.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Grant {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    #[serde(default)]
    sub: String,
    aud: String,
    exp: i64,
    #[serde(default)]
    nbf: i64,
    #[serde(default)]
    iat: i64,
    #[serde(default)]
    jti: String,
    #[serde(default)]
    access: Vec<Grant>,
}

/// A verified access token.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The user it was issued to (empty: anonymous).
    pub sub: String,
    pub grants: Vec<Grant>,
}

impl Grant {
    /// `actions` on repository `name`.
    pub fn repository(name: &str, actions: Actions) -> Grant {
        Grant {
            kind: "repository".into(),
            name: name.to_owned(),
            actions: actions.iter().map(|a| a.as_str().to_owned()).collect(),
        }
    }

    /// Listing the catalog.
    pub fn catalog() -> Grant {
        Grant {
            kind: "registry".into(),
            name: "catalog".into(),
            actions: vec!["*".into()],
        }
    }
}

impl Verified {
    /// What the token allows on repository `name`.
    pub fn allows(&self, name: &str) -> Actions {
        self.grants
            .iter()
            .filter(|g| g.kind == "repository" && g.name == name)
            .fold(Actions::NONE, |a, g| a.or(Actions::parse_each(&g.actions)))
    }
}

struct External {
    issuer: String,
    audience: String,
    /// With the algorithm each key verifies (from its type).
    keys: Vec<(DecodingKey, Algorithm, Option<String>)>,
}

pub struct Tokens {
    service: String,
    ttl: u64,
    refresh_ttl: u64,
    signer: EncodingKey,
    kid: String,
    own: DecodingKey,
    externals: Vec<External>,
}

/// An issued access token.
pub struct Issued {
    pub token: String,
    pub expires_in: u64,
    pub issued_at: i64,
}

fn now() -> i64 {
    berth_meta::now_millis() / 1000
}

fn jti() -> String {
    let mut b = [0u8; 16];
    // An id only needs to be unique; a failing random source leaves the time-based part.
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

/// Reads the PKCS#8 Ed25519 key at `path`, or makes one there when `create` and it does not
/// exist yet (mode 0600, written whole then renamed into place).
fn load_key(path: &Path, create: bool) -> anyhow::Result<Vec<u8>> {
    match std::fs::read_to_string(path) {
        Ok(pem) => PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map(|der| der.secret_pkcs8_der().to_vec())
            .map_err(|e| {
                anyhow::anyhow!("token key {}: not a PKCS#8 PEM key: {e}", path.display())
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let der = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|e| anyhow::anyhow!("generating the token key: {e}"))?;
            let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
            let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
            for line in b64.as_bytes().chunks(64) {
                pem.push_str(&String::from_utf8_lossy(line));
                pem.push('\n');
            }
            pem.push_str("-----END PRIVATE KEY-----\n");
            let tmp = path.with_extension("pem.tmp");
            {
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
                    .with_context(|| format!("writing {}", tmp.display()))?;
                f.write_all(pem.as_bytes())?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
            tracing::info!(path = %path.display(), "made a new token signing key");
            Ok(der.as_ref().to_vec())
        }
        Err(e) => Err(e).with_context(|| format!("reading token key {}", path.display())),
    }
}

/// The algorithm a JWKS key verifies: the one its `alg` names, else its key type's usual one.
fn algorithm_of(jwk: &Jwk) -> Algorithm {
    if let Some(a) = jwk
        .common
        .key_algorithm
        .and_then(|a| Algorithm::try_from(a).ok())
    {
        return a;
    }
    match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P384 => Algorithm::ES384,
        AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
        _ => Algorithm::RS256,
    }
}

/// A trusted issuer's keys, from its PEM public key or its JWKS file.
fn external(i: &crate::config::IssuerConfig) -> anyhow::Result<External> {
    let keys = match (&i.public_key, &i.jwks) {
        (Some(p), None) => vec![pem_key(&i.issuer, p)?],
        (None, Some(p)) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("issuer {}: reading {}", i.issuer, p.display()))?;
            let set: JwkSet = serde_json::from_str(&text)
                .with_context(|| format!("issuer {}: {} is no JWKS", i.issuer, p.display()))?;
            let mut keys = Vec::new();
            for jwk in &set.keys {
                let key = DecodingKey::from_jwk(jwk)
                    .with_context(|| format!("issuer {}: a key of {}", i.issuer, p.display()))?;
                keys.push((key, algorithm_of(jwk), jwk.common.key_id.clone()));
            }
            keys
        }
        _ => bail!(
            "issuer {}: needs exactly one of public_key and jwks",
            i.issuer
        ),
    };
    Ok(External {
        issuer: i.issuer.clone(),
        audience: i.audience.clone(),
        keys,
    })
}

/// A PEM public key of `issuer`: EC P-256, Ed25519 or RSA.
fn pem_key(issuer: &str, p: &Path) -> anyhow::Result<(DecodingKey, Algorithm, Option<String>)> {
    let pem =
        std::fs::read(p).with_context(|| format!("issuer {issuer}: reading {}", p.display()))?;
    let unusable = || format!("issuer {issuer}: {} is no usable public key", p.display());
    let text = String::from_utf8_lossy(&pem);
    if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
        Ok((k, Algorithm::ES256, None))
    } else if let Ok(k) = DecodingKey::from_ed_pem(&pem) {
        Ok((k, Algorithm::EdDSA, None))
    } else if text.contains("RSA") || text.contains("PUBLIC KEY") {
        let k = DecodingKey::from_rsa_pem(&pem).with_context(unusable)?;
        Ok((k, Algorithm::RS256, None))
    } else {
        bail!(unusable())
    }
}

impl Tokens {
    /// `key`: the configured key file, else `default_key` (made when missing).
    pub fn load(
        service: &str,
        ttl: u64,
        refresh_ttl: u64,
        key: Option<&Path>,
        default_key: &Path,
        issuers: &[crate::config::IssuerConfig],
    ) -> anyhow::Result<Tokens> {
        let der = match key {
            Some(p) => load_key(p, false)?,
            None => load_key(default_key, true)?,
        };
        let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(&der)
            .map_err(|e| anyhow::anyhow!("token key: not a PKCS#8 Ed25519 key: {e}"))?;
        let public = aws_lc_rs::signature::KeyPair::public_key(&pair)
            .as_ref()
            .to_vec();
        let kid = hex::encode(
            &aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &public).as_ref()[..8],
        );
        let externals = issuers
            .iter()
            .map(external)
            .collect::<anyhow::Result<_>>()?;
        Ok(Tokens {
            service: service.to_owned(),
            ttl,
            refresh_ttl,
            signer: EncodingKey::from_ed_der(&der),
            kid,
            own: DecodingKey::from_ed_der(&public),
            externals,
        })
    }

    fn sign(&self, claims: &Claims) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.signer).context("signing a token")
    }

    /// An access token for `sub` (empty: anonymous) with `grants`.
    pub fn issue(&self, sub: &str, grants: Vec<Grant>) -> anyhow::Result<Issued> {
        let now = now();
        let token = self.sign(&Claims {
            iss: ISSUER.into(),
            sub: sub.into(),
            aud: self.service.clone(),
            exp: now + self.ttl as i64,
            nbf: now - 1,
            iat: now,
            jti: jti(),
            access: grants,
        })?;
        Ok(Issued {
            token,
            expires_in: self.ttl,
            issued_at: now,
        })
    }

    /// A refresh token for `sub`.
    pub fn issue_refresh(&self, sub: &str) -> anyhow::Result<String> {
        let now = now();
        self.sign(&Claims {
            iss: ISSUER.into(),
            sub: sub.into(),
            aud: format!("{}:refresh", self.service),
            exp: now + self.refresh_ttl as i64,
            nbf: now - 1,
            iat: now,
            jti: jti(),
            access: Vec::new(),
        })
    }

    fn decode(
        token: &str,
        key: &DecodingKey,
        alg: Algorithm,
        iss: &str,
        aud: &str,
    ) -> Option<Claims> {
        let mut v = Validation::new(alg);
        v.set_issuer(&[iss]);
        v.set_audience(&[aud]);
        v.validate_nbf = true;
        v.leeway = 30;
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        jsonwebtoken::decode::<Claims>(token, key, &v)
            .ok()
            .map(|d| d.claims)
    }

    /// The access token's contents if Berth or a trusted issuer signed it for this service
    /// and it has not expired; `None` for any other string.
    pub fn verify(&self, token: &str) -> Option<Verified> {
        let own = Self::decode(token, &self.own, Algorithm::EdDSA, ISSUER, &self.service);
        let claims = own.or_else(|| {
            let kid = jsonwebtoken::decode_header(token).ok()?.kid;
            self.externals.iter().find_map(|e| {
                e.keys
                    .iter()
                    .filter(|(_, _, k)| k.is_none() || kid.is_none() || *k == kid)
                    .find_map(|(key, alg, _)| {
                        Self::decode(token, key, *alg, &e.issuer, &e.audience)
                    })
            })
        })?;
        Some(Verified {
            sub: claims.sub,
            grants: claims.access,
        })
    }

    /// The user a refresh token was issued to, if it is one of Berth's and still valid.
    pub fn verify_refresh(&self, token: &str) -> Option<String> {
        let aud = format!("{}:refresh", self.service);
        Self::decode(token, &self.own, Algorithm::EdDSA, ISSUER, &aud)
            .map(|c| c.sub)
            .filter(|s| !s.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(dir: &Path, ttl: u64) -> Tokens {
        Tokens::load("berth", ttl, 60, None, &dir.join("token-key.pem"), &[]).unwrap()
    }

    #[test]
    fn issued_tokens_verify_and_others_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let t = tokens(dir.path(), 300);
        let grants = vec![Grant {
            kind: "repository".into(),
            name: "team/app".into(),
            actions: vec!["pull".into(), "push".into()],
        }];
        let issued = t.issue("alice", grants.clone()).unwrap();
        let v = t.verify(&issued.token).expect("own token verifies");
        assert_eq!((v.sub.as_str(), &v.grants), ("alice", &grants));
        assert_eq!(v.allows("team/app"), Actions::parse("pull,push"));
        assert_eq!(v.allows("team/other"), Actions::NONE);

        // The key is kept: a restart verifies tokens issued before it.
        let again = tokens(dir.path(), 300);
        assert!(again.verify(&issued.token).is_some());

        // A tampered payload, another key, another audience, an expired token: refused.
        let mut parts: Vec<String> = issued.token.split('.').map(str::to_owned).collect();
        parts[1] = parts[1].replace('a', "b");
        assert!(t.verify(&parts.join(".")).is_none());
        let other = tempfile::tempdir().unwrap();
        assert!(tokens(other.path(), 300).verify(&issued.token).is_none());
        let foreign = Tokens::load(
            "elsewhere",
            300,
            60,
            None,
            &dir.path().join("token-key.pem"),
            &[],
        )
        .unwrap();
        assert!(foreign.verify(&issued.token).is_none(), "wrong audience");
        // Expired (beyond the 30 s leeway allowed for clock skew).
        let stale = t
            .sign(&Claims {
                iss: ISSUER.into(),
                sub: "alice".into(),
                aud: "berth".into(),
                exp: now() - 120,
                nbf: now() - 600,
                iat: now() - 600,
                jti: jti(),
                access: vec![],
            })
            .unwrap();
        assert!(t.verify(&stale).is_none(), "expired");
        assert!(t.verify("not.a.token").is_none());

        // Refresh tokens are not access tokens, nor the reverse.
        let refresh = t.issue_refresh("alice").unwrap();
        assert_eq!(t.verify_refresh(&refresh).as_deref(), Some("alice"));
        assert!(t.verify(&refresh).is_none());
        assert!(t.verify_refresh(&issued.token).is_none());
    }
}

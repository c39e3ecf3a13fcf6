//! Authentication and access control: Basic credentials on `/v2/`, the token flow, the
//! permission matrix of the access rules over every endpoint class, forged and expired
//! tokens, throttled brute force, and TLS with certificate reload.

use crate::e2e::harness::{error_code, header, TestRegistry};
use crate::e2e::images::ImageBuilder;
use reqwest::{Method, StatusCode};
use std::path::Path;

/// Users (password = name + "-pw") and the rules of the test registry.
const CONFIG: &str = r#"
[auth]
htpasswd = "HTPASSWD"
admins = ["root"]
login_burst = 5
login_refill_secs = 60

[auth.groups]
team-a = ["alice"]

[[auth.rules]]
users = ["root"]
repositories = ["**"]
actions = ["*"]

[[auth.rules]]
groups = ["team-a"]
repositories = ["team-a/**"]
actions = ["pull", "push", "delete"]

[[auth.rules]]
users = ["*"]
repositories = ["public/**"]
actions = ["pull"]

[[auth.rules]]
users = ["bob"]
repositories = ["public/**"]
actions = ["push"]

[[auth.rules]]
anonymous = true
repositories = ["public/open"]
actions = ["pull"]
"#;

/// Writes the htpasswd file and the configuration (`extra` keys under `[auth]`, `tail`
/// tables at the end); returns the configuration's path.
fn write_config(dir: &Path, extra: &str, tail: &str) -> std::path::PathBuf {
    let mut lines = String::new();
    for user in ["root", "alice", "bob", "carol"] {
        let hash = bcrypt::hash(format!("{user}-pw"), 4).unwrap();
        lines.push_str(&format!("{user}:{hash}\n"));
    }
    let htpasswd = dir.join("htpasswd");
    std::fs::write(&htpasswd, lines).unwrap();
    let config = dir.join("berth.toml");
    let text = CONFIG.replace("HTPASSWD", htpasswd.to_str().unwrap());
    // Extra [auth] keys go right under the [auth] header.
    let text = text.replacen("[auth]\n", &format!("[auth]\n{extra}\n"), 1);
    std::fs::write(&config, format!("{text}\n{tail}")).unwrap();
    config
}

pub fn spawn(dir: &Path, extra: &str) -> TestRegistry {
    let config = write_config(dir, extra, "");
    TestRegistry::spawn_with(&dir.join("data"), &["--config", config.to_str().unwrap()])
}

/// The request each endpoint class makes, on `repo`.
fn request(class: &str, repo: &str, digest: &str) -> (Method, String) {
    match class {
        "manifest-get" => (Method::GET, format!("/v2/{repo}/manifests/v1")),
        "manifest-head" => (Method::HEAD, format!("/v2/{repo}/manifests/v1")),
        "blob-get" => (Method::GET, format!("/v2/{repo}/blobs/{digest}")),
        "tags" => (Method::GET, format!("/v2/{repo}/tags/list")),
        "referrers" => (Method::GET, format!("/v2/{repo}/referrers/{digest}")),
        "upload" => (Method::POST, format!("/v2/{repo}/blobs/uploads/")),
        "manifest-delete" => (Method::DELETE, format!("/v2/{repo}/manifests/{digest}")),
        other => unreachable!("{other}"),
    }
}

#[tokio::test]
async fn permission_matrix_over_every_endpoint_class() {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = spawn(dir.path(), "");
    let img = ImageBuilder::new(11).layers(1, 500).build();
    reg.basic = Some(("root".into(), "root-pw".into()));
    let mut digests = std::collections::HashMap::new();
    for repo in ["team-a/app", "public/lib", "public/open", "private/x"] {
        digests.insert(repo, reg.push_image(repo, "v1", &img).await);
    }
    let config_digest = crate::e2e::harness::sha256(&img.config);

    let pull = [
        "manifest-get",
        "manifest-head",
        "blob-get",
        "tags",
        "referrers",
    ];
    let classes: Vec<(&str, char)> = pull
        .iter()
        .map(|c| (*c, 'r'))
        .chain([("upload", 'w'), ("manifest-delete", 'd')])
        .collect();
    // Who may do what, per repository: r = pull, w = push, d = delete. "nowhere/x" does not
    // exist: to those who may not pull there it must look like a forbidden repository.
    let expected: &[(Option<&str>, &str, &str)] = &[
        (Some("root"), "team-a/app", "rwd"),
        (Some("root"), "private/x", "rwd"),
        (Some("alice"), "team-a/app", "rwd"),
        (Some("alice"), "public/lib", "r"),
        (Some("alice"), "private/x", ""),
        (Some("alice"), "nowhere/x", ""),
        (Some("bob"), "team-a/app", ""),
        (Some("bob"), "public/lib", "rw"),
        (Some("carol"), "public/lib", "r"),
        (Some("carol"), "public/open", "r"),
        (None, "public/open", "r"),
        (None, "public/lib", ""),
        (None, "team-a/app", ""),
        (None, "nowhere/x", ""),
    ];
    let anon = reqwest::Client::new();
    for (user, repo, rights) in expected {
        let digest = digests
            .get(repo)
            .cloned()
            .unwrap_or_else(|| config_digest.clone());
        for (class, right) in &classes {
            let (method, path) = request(class, repo, &digest);
            let mut r = anon.request(method.clone(), reg.url(&path));
            if let Some(u) = user {
                r = r.basic_auth(u, Some(format!("{u}-pw")));
            }
            let resp = r.send().await.unwrap();
            let status = resp.status();
            let what = format!("{user:?} {class} {repo}: {status}");
            if rights.contains(*right) {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{what}: should be allowed"
                );
                assert!(!status.is_server_error(), "{what}");
            } else if user.is_none() {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
                let challenge = header(&resp, "www-authenticate");
                assert!(
                    challenge.starts_with("Bearer realm=\""),
                    "{what}: {challenge}"
                );
                assert!(
                    challenge.contains(&format!("scope=\"repository:{repo}:")),
                    "{challenge}"
                );
                if method != Method::HEAD {
                    assert_eq!(error_code(resp).await, "UNAUTHORIZED", "{what}");
                }
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{what}");
                if method != Method::HEAD {
                    assert_eq!(error_code(resp).await, "DENIED", "{what}");
                }
            }
        }
    }

    // The catalog lists only what the caller may pull.
    for (user, want) in [
        (
            Some("alice"),
            vec!["public/lib", "public/open", "team-a/app"],
        ),
        (Some("bob"), vec!["public/lib", "public/open"]),
        (None, vec!["public/open"]),
        (
            Some("root"),
            vec!["private/x", "public/lib", "public/open", "team-a/app"],
        ),
    ] {
        let mut seen: Vec<String> = Vec::new();
        // Walk it one entry at a time: hidden names must not stop the walk.
        let mut next = Some("/v2/_catalog?n=1".to_string());
        while let Some(path) = next.take() {
            let mut r = anon.get(reg.url(&path));
            if let Some(u) = user {
                r = r.basic_auth(u, Some(format!("{u}-pw")));
            }
            let resp = r.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{user:?} catalog");
            let link = header(&resp, "link");
            let body: serde_json::Value = resp.json().await.unwrap();
            for name in body["repositories"].as_array().unwrap() {
                seen.push(name.as_str().unwrap().to_owned());
            }
            if !link.is_empty() {
                next = Some(link[1..link.find('>').unwrap()].to_string());
            }
        }
        assert_eq!(seen, want, "{user:?} catalog");
    }
}

#[tokio::test]
async fn token_flow_with_scopes_refresh_and_bad_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = spawn(dir.path(), "");
    reg.basic = Some(("alice".into(), "alice-pw".into()));
    let img = ImageBuilder::new(12).layers(1, 300).build();
    reg.push_image("team-a/app", "v1", &img).await;
    let c = reqwest::Client::new();

    // Anonymous /v2/: a challenge naming the realm and the service.
    let r = c.get(reg.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = header(&r, "www-authenticate");
    assert_eq!(
        challenge,
        format!(
            "Bearer realm=\"http://{}/token\",service=\"berth\"",
            reg.addr
        )
    );

    // A token for a scope, with the Basic credentials; used on that repository.
    let token = |scope: &'static str, user: &'static str| {
        let c = c.clone();
        let url = reg.url(&format!(
            "/token?service=berth&scope={scope}&offline_token=true"
        ));
        async move {
            let r = c
                .get(url)
                .basic_auth(user, Some(format!("{user}-pw")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    let body = token("repository:team-a/app:pull,push", "alice").await;
    let t = body["token"].as_str().unwrap().to_owned();
    assert_eq!(body["access_token"], body["token"]);
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    assert!(body["issued_at"].as_str().unwrap().ends_with('Z'));
    let bearer = |path: &str, t: &str| c.get(reg.url(path)).bearer_auth(t).send();
    assert_eq!(bearer("/v2/", &t).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        bearer("/v2/team-a/app/manifests/v1", &t)
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // Out of scope: 401 asking for the right scope.
    let r = bearer("/v2/public/lib/tags/list", &t).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let ch = header(&r, "www-authenticate");
    assert!(
        ch.contains("scope=\"repository:public/lib:pull\"") && ch.contains("insufficient_scope"),
        "{ch}"
    );
    // A scope the rules do not give is not granted, whatever is asked.
    let body = token("repository:private/x:pull,push,delete", "alice").await;
    let grants = jwt_payload(body["token"].as_str().unwrap());
    assert_eq!(
        grants["access"],
        serde_json::json!([{"type": "repository", "name": "private/x", "actions": []}])
    );

    // The catalog scope docker clients ask for; the listing follows the rules, not the
    // token's repository grants.
    let body = token("registry:catalog:*", "alice").await;
    let ct = body["token"].as_str().unwrap().to_owned();
    assert_eq!(
        jwt_payload(&ct)["access"],
        serde_json::json!([{"type": "registry", "name": "catalog", "actions": ["*"]}])
    );
    let r = bearer("/v2/_catalog", &ct).await.unwrap();
    let listed: serde_json::Value = r.json().await.unwrap();
    assert_eq!(listed["repositories"], serde_json::json!(["team-a/app"]));

    // Refresh: a new access token without the password.
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let r = c
        .post(reg.url("/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("service", "berth"),
            ("scope", "repository:team-a/app:pull"),
            ("client_id", "test"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let fresh = r.json::<serde_json::Value>().await.unwrap();
    let t2 = fresh["access_token"].as_str().unwrap();
    assert_eq!(
        bearer("/v2/team-a/app/tags/list", t2)
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // A refresh token is no access token, and an access token no refresh token.
    assert_eq!(
        bearer("/v2/", &refresh).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let r = c
        .post(reg.url("/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", t.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // OAuth2 password grant.
    let r = c
        .post(reg.url("/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "alice-pw"),
            ("scope", "repository:team-a/app:pull"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let log = std::fs::read_to_string(reg.log_path()).unwrap();
    assert!(log.contains("/token"), "the token requests are logged");
    for secret in [t.as_str(), refresh.as_str(), "alice-pw"] {
        assert!(!log.contains(secret), "a secret reached the log");
    }

    // Forged, foreign, expired, wrong-audience tokens: 401 with the error body, never 500.
    let key = std::fs::read(reg.data.join("token-key.pem")).unwrap();
    let other_key = {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let der = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        der.as_ref().to_vec()
    };
    let own = pem_der(&key);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let access =
        serde_json::json!([{"type": "repository", "name": "team-a/app", "actions": ["pull"]}]);
    let claims = |aud: &str, exp: i64| {
        serde_json::json!({"iss": "berth", "sub": "alice", "aud": aud, "exp": exp,
                           "nbf": now - 10, "iat": now - 10, "access": access})
    };
    let sign = |der: &[u8], c: serde_json::Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
            &c,
            &jsonwebtoken::EncodingKey::from_ed_der(der),
        )
        .unwrap()
    };
    let good = sign(&own, claims("berth", now + 60));
    assert_eq!(
        bearer("/v2/team-a/app/tags/list", &good)
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    for (what, bad) in [
        ("expired", sign(&own, claims("berth", now - 120))),
        ("wrong audience", sign(&own, claims("elsewhere", now + 60))),
        (
            "wrong signature",
            sign(&other_key, claims("berth", now + 60)),
        ),
        ("tampered", {
            let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
            parts[1] = base64_url(&serde_json::to_vec(&claims("berth", now + 600)).unwrap());
            parts.join(".")
        }),
        ("garbage", "x.y.z".to_string()),
    ] {
        let r = bearer("/v2/team-a/app/tags/list", &bad).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(error_code(r).await, "UNAUTHORIZED", "{what}");
    }
}

#[tokio::test]
async fn bad_credentials_and_malformed_headers_are_401_and_brute_force_is_throttled() {
    let dir = tempfile::tempdir().unwrap();
    let reg = spawn(dir.path(), "");
    let c = reqwest::Client::new();
    for value in [
        "Basic !!!notbase64",
        "Basic",
        "Bearer",
        "Digest username=x",
        "Basic Zm9v", // "foo": no colon
        "   ",
    ] {
        let r = c
            .get(reg.url("/v2/public/open/tags/list"))
            .header("authorization", value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{value:?}");
        assert!(
            header(&r, "www-authenticate").starts_with("Bearer "),
            "{value:?}"
        );
        assert_eq!(error_code(r).await, "UNAUTHORIZED", "{value:?}");
    }
    let r = c
        .get(reg.url("/v2/"))
        .header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes(b"Basic \xff\xfe").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Wrong passwords: 401 until the burst (5) is spent, then 429 with Retry-After, even
    // for the right password from the same address.
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let r = c
            .get(reg.url("/v2/"))
            .basic_auth("carol", Some("guess"))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(header(&r, "retry-after").parse::<u64>().unwrap() >= 1);
            assert_eq!(error_code(r).await, "TOOMANYREQUESTS");
        }
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429, 429]);
    let r = c
        .get(reg.url("/v2/"))
        .basic_auth("carol", Some("carol-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // The token endpoint is throttled alike.
    let r = c
        .get(reg.url("/token?service=berth"))
        .basic_auth("carol", Some("carol-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);

    // No password or token reaches the log.
    let log = std::fs::read_to_string(reg.log_path()).unwrap_or_default();
    assert!(
        !log.contains("carol-pw") && !log.contains("guess"),
        "credentials in the log"
    );
}

#[tokio::test]
async fn tls_with_http2_and_certificate_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let make = |name: &str| {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into(), name.into()]).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    };
    let (c1, k1) = make("first.test");
    std::fs::write(&cert, &c1).unwrap();
    std::fs::write(&key, &k1).unwrap();
    let mut reg = TestRegistry::spawn_with(
        &dir.path().join("data"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(reg.scheme, "https");
    let port = reg.addr.rsplit(':').next().unwrap().to_owned();
    let client_for = |pem: &str| {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes()).unwrap()])
            .resolve("localhost", format!("127.0.0.1:{port}").parse().unwrap())
            .build()
            .unwrap()
    };
    let url = format!("https://localhost:{port}/v2/");
    let r = client_for(&c1).get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN picks HTTP/2");
    let h1 = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(c1.as_bytes()).unwrap()])
        .resolve("localhost", format!("127.0.0.1:{port}").parse().unwrap())
        .http1_only()
        .build()
        .unwrap();
    // Blobs go over TLS by the streamed path (no sendfile there), HTTP/1.1 too.
    reg.client = h1;
    reg.addr = format!("localhost:{port}");
    let img = ImageBuilder::new(13).layers(1, 5 << 20).build();
    let d = reg.push_image("tls/app", "v1", &img).await;
    let r = reg.get("/v2/tls/app/manifests/v1").await;
    assert_eq!(header(&r, "docker-content-digest"), d);
    let layer = crate::e2e::harness::sha256(&img.layers[0]);
    let body = reg
        .get(&format!("/v2/tls/app/blobs/{layer}"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(crate::e2e::harness::sha256(&body), layer);

    // A new certificate: new connections get it within the reload period.
    let (c2, k2) = make("second.test");
    std::fs::write(dir.path().join("key.tmp"), &k2).unwrap();
    std::fs::write(dir.path().join("cert.tmp"), &c2).unwrap();
    std::fs::rename(dir.path().join("key.tmp"), &key).unwrap();
    std::fs::rename(dir.path().join("cert.tmp"), &cert).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match client_for(&c2).get(&url).send().await {
            Ok(r) if r.status() == StatusCode::OK => break,
            _ if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await
            }
            other => panic!("the new certificate was not served: {other:?}"),
        }
    }
    assert!(
        client_for(&c1).get(&url).send().await.is_err(),
        "the old one is gone"
    );
}

fn pem_der(pem: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let text = String::from_utf8_lossy(pem);
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

fn base64_url(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn jwt_payload(t: &str) -> serde_json::Value {
    use base64::Engine;
    let p = t.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .unwrap(),
    )
    .unwrap()
}

/// Tokens of an external issuer: accepted when signed by its key (a PEM public key, or a
/// JWKS), with its issuer and audience; refused otherwise.
#[tokio::test]
async fn external_issuer_tokens_by_pem_key_and_jwks() {
    use aws_lc_rs::signature::KeyPair;
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let mut keys = Vec::new();
    for _ in 0..2 {
        let der = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(der.as_ref()).unwrap();
        keys.push((der.as_ref().to_vec(), pair.public_key().as_ref().to_vec()));
    }
    // Issuer one: a PEM public key (SubjectPublicKeyInfo of Ed25519).
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(&keys[0].1);
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(&spki)
    );
    std::fs::write(dir.path().join("one.pem"), pem).unwrap();
    // Issuer two: a JWKS.
    let jwks = serde_json::json!({"keys": [{
        "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": "two-1",
        "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&keys[1].1),
    }]});
    std::fs::write(dir.path().join("two.json"), jwks.to_string()).unwrap();
    let extra = format!(
        "[[auth.issuers]]\nissuer = \"https://one.example\"\naudience = \"registry\"\n\
         public_key = \"{}\"\n\n[[auth.issuers]]\nissuer = \"https://two.example\"\n\
         audience = \"registry\"\njwks = \"{}\"\n",
        dir.path().join("one.pem").display(),
        dir.path().join("two.json").display()
    );
    // Issuers are tables after [auth]'s keys: at the end of the file.
    let config = write_config(dir.path(), "", &extra);
    let reg = TestRegistry::spawn_with(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let token = |key: &[u8], kid: Option<&str>, iss: &str, aud: &str| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = kid.map(str::to_owned);
        let claims = serde_json::json!({"iss": iss, "sub": "ext-user", "aud": aud,
            "exp": now + 60, "nbf": now - 5, "iat": now - 5,
            "access": [{"type": "repository", "name": "public/open", "actions": ["pull"]}]});
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_ed_der(key),
        )
        .unwrap()
    };
    let c = reqwest::Client::new();
    let status = |t: String| {
        let c = c.clone();
        let url = reg.url("/v2/public/open/tags/list");
        async move { c.get(url).bearer_auth(t).send().await.unwrap().status() }
    };
    // public/open exists only once pushed; a 404 NAME_UNKNOWN still proves the token passed.
    let passed = |s: StatusCode| s != StatusCode::UNAUTHORIZED && s != StatusCode::FORBIDDEN;
    assert!(passed(
        status(token(&keys[0].0, None, "https://one.example", "registry")).await
    ));
    assert!(passed(
        status(token(
            &keys[1].0,
            Some("two-1"),
            "https://two.example",
            "registry"
        ))
        .await
    ));
    for (what, t) in [
        (
            "issuer two's key under issuer one",
            token(&keys[1].0, None, "https://one.example", "registry"),
        ),
        (
            "wrong audience",
            token(&keys[0].0, None, "https://one.example", "other"),
        ),
        (
            "unknown issuer",
            token(&keys[0].0, None, "https://three.example", "registry"),
        ),
    ] {
        assert_eq!(status(t).await, StatusCode::UNAUTHORIZED, "{what}");
    }
}

/// The administration API: admins only; others are told to log in (401) or refused (403).
#[tokio::test]
async fn admin_api_is_for_admins_only() {
    let dir = tempfile::tempdir().unwrap();
    let reg = spawn(dir.path(), "");
    let call = |user: Option<&str>, method: Method, path: &str| {
        let r = reg.client.request(method, reg.url(path));
        let r = match user {
            Some(u) => r.basic_auth(u, Some(format!("{u}-pw"))),
            None => r,
        };
        async move { r.send().await.unwrap() }
    };
    for (method, path) in [
        (Method::GET, "/api/v1/usage"),
        (Method::GET, "/api/v1/repositories"),
        (Method::POST, "/api/v1/gc?dry_run=true"),
        (Method::POST, "/api/v1/reconcile?dry_run=true"),
    ] {
        let r = call(None, method.clone(), path).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert!(r.headers().contains_key("www-authenticate"));
        let r = call(Some("alice"), method.clone(), path).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
        assert_eq!(error_code(r).await, "DENIED");
        let r = call(Some("root"), method.clone(), path).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    let r = call(Some("root"), Method::GET, "/api/v1/nothing").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = call(Some("root"), Method::DELETE, "/api/v1/gc").await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}

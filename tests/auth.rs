//! Identity: every way a token can be wrong gets FATAL 28P01/28000 naming the
//! failed check; good tokens from RS256, ES256 and EdDSA issuers get in; the
//! upstream credential works with SCRAM, md5, cleartext and trust, and never
//! reaches a client or a log.

mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use harness::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RSA_KEY: &str = include_str!("fixtures/rsa-test-key.pem");
const RSA_OTHER: &str = include_str!("fixtures/rsa-other-key.pem");
const EC_KEY: &str = include_str!("fixtures/ec-test-key.pem");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(extra: Value) -> Value {
    let mut c = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "repo:acme/app:ref:refs/heads/main",
        "repository": "acme/app", "iat": now(), "exp": now() + 600,
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn rsa_jwk(pem: &str, kid: &str) -> Value {
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem).unwrap();
    json!({
        "kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
        "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
    })
}

fn ec_jwk(pem: &str, kid: &str) -> Value {
    let key = p256::SecretKey::from_pkcs8_pem(pem).unwrap();
    let point =
        p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&key.public_key(), false);
    json!({
        "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
        "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
    })
}

fn sign(alg: Algorithm, kid: &str, pem: &str, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        _ => unreachable!(),
    };
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// A gateway whose JWKS holds the dev Ed25519 key, the RSA key "rsa1" and the EC
/// key "ec1".
async fn setup() -> (Pg, Issuer, Gw<AllowAll>) {
    let pg = Pg::start();
    let issuer = Issuer::new();
    let mut jwks: Value =
        serde_json::from_str(&std::fs::read_to_string(issuer.jwks_path()).unwrap()).unwrap();
    let keys = jwks["keys"].as_array_mut().unwrap();
    keys.push(rsa_jwk(RSA_KEY, "rsa1"));
    keys.push(ec_jwk(EC_KEY, "ec1"));
    std::fs::write(issuer.jwks_path(), jwks.to_string()).unwrap();
    let gw = start_gateway(&base_config(&pg, &issuer), AllowAll).await;
    (pg, issuer, gw)
}

async fn refused(gw: &Gw<AllowAll>, role: &str, token: &str) -> (String, String) {
    let Err(err) = connect(&gw.url(role, token)).await else {
        panic!("connection must be refused")
    };
    let (code, message) = db_error(&err);
    assert_eq!(err.as_db_error().unwrap().severity(), "FATAL");
    assert!(!message.contains(token), "the token is never echoed");
    (code, message)
}

#[tokio::test]
async fn tokens_from_each_allowed_algorithm_get_in() {
    let (_pg, issuer, gw) = setup().await;
    for token in [
        issuer.token(&[]),
        sign(Algorithm::RS256, "rsa1", RSA_KEY, &claims(json!({}))),
        sign(Algorithm::ES256, "ec1", EC_KEY, &claims(json!({}))),
    ] {
        let client = connect(&gw.url("app", &token)).await.unwrap();
        let user: String = client
            .query_one("select current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            user, APP_USER,
            "the session runs as the gateway's upstream user"
        );
    }
}

#[tokio::test]
async fn every_bad_token_names_its_check() {
    let (_pg, issuer, gw) = setup().await;
    let past = json!({ "exp": now() - 120, "iat": now() - 720 });
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "expired",
            sign(Algorithm::RS256, "rsa1", RSA_KEY, &claims(past)),
            "28P01",
            "token has expired",
        ),
        (
            "another audience",
            sign(
                Algorithm::RS256,
                "rsa1",
                RSA_KEY,
                &claims(json!({ "aud": "some-other-service" })),
            ),
            "28P01",
            "audience",
        ),
        (
            "unknown issuer",
            sign(
                Algorithm::RS256,
                "rsa1",
                RSA_KEY,
                &claims(json!({ "iss": "https://evil.invalid" })),
            ),
            "28P01",
            "issuer is not trusted",
        ),
        (
            "unknown key",
            sign(
                Algorithm::RS256,
                "rsa-rotated",
                RSA_OTHER,
                &claims(json!({})),
            ),
            "28P01",
            "signing key is unknown",
        ),
        (
            "bad signature (known kid, other key)",
            sign(Algorithm::RS256, "rsa1", RSA_OTHER, &claims(json!({}))),
            "28P01",
            "signature is invalid",
        ),
        (
            "not yet valid",
            sign(
                Algorithm::RS256,
                "rsa1",
                RSA_KEY,
                &claims(json!({ "nbf": now() + 3600 })),
            ),
            "28P01",
            "not valid yet",
        ),
        (
            "garbage",
            "not-a-jwt".into(),
            "28P01",
            "not a well-formed JWT",
        ),
        (
            "no sub",
            {
                let mut c = claims(json!({}));
                c.as_object_mut().unwrap().remove("sub");
                sign(Algorithm::RS256, "rsa1", RSA_KEY, &c)
            },
            "28P01",
            "sub",
        ),
        (
            "not allowed to assume role",
            sign(
                Algorithm::RS256,
                "rsa1",
                RSA_KEY,
                &claims(json!({ "repository": "acme/other" })),
            ),
            "28000",
            "not allowed to assume role \"app\"",
        ),
    ];
    for (name, token, code, needle) in cases {
        let (got_code, message) = refused(&gw, "app", &token).await;
        assert_eq!(got_code, code, "{name}: {message}");
        assert!(message.contains(needle), "{name}: {message}");
        assert!(
            !message.contains("BEGIN") && !message.contains("\"n\""),
            "{name}: nothing about keys"
        );
    }
    // A valid token for a role that does not exist.
    let (code, message) = refused(&gw, "no_such_role", &issuer.token(&[])).await;
    assert_eq!(code, "28000");
    assert!(message.contains("no_such_role"), "{message}");
}

#[tokio::test]
async fn alg_none_and_hmac_with_the_public_key_are_refused() {
    let (_pg, _issuer, gw) = setup().await;
    let body = URL_SAFE_NO_PAD.encode(claims(json!({})).to_string());
    let none = format!(
        "{}.{body}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#)
    );
    let (code, message) = refused(&gw, "app", &none).await;
    assert_eq!(code, "28P01");
    assert!(
        message.contains("algorithm none is not allowed"),
        "{message}"
    );

    // The classic key-confusion attack: HS256 keyed with the RSA public key.
    let public_pem = {
        use rsa::pkcs8::EncodePublicKey;
        rsa::RsaPrivateKey::from_pkcs8_pem(RSA_KEY)
            .unwrap()
            .to_public_key()
            .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap()
    };
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa1".into());
    let hs = jsonwebtoken::encode(
        &header,
        &claims(json!({})),
        &EncodingKey::from_secret(public_pem.as_bytes()),
    )
    .unwrap();
    let (code, message) = refused(&gw, "app", &hs).await;
    assert_eq!(code, "28P01");
    assert!(
        message.contains("algorithm HS256 is not allowed"),
        "{message}"
    );

    // RS256 header over a key published for ES256.
    let confused = sign(Algorithm::RS256, "ec1", RSA_KEY, &claims(json!({})));
    let (code, _) = refused(&gw, "app", &confused).await;
    assert_eq!(code, "28P01");
}

#[tokio::test]
async fn a_token_replayed_after_expiry_is_refused() {
    let (_pg, issuer, gw) = setup().await;
    let token = issuer.mint(
        [("repository".to_string(), json!("acme/app"))]
            .into_iter()
            .collect(),
        Duration::from_secs(2),
    );
    let exp = now() + 2;
    connect(&gw.url("app", &token))
        .await
        .expect("valid while fresh");
    // The condition under test is time itself: wait until the token's exp passes
    // (leeway is 0 in the test config).
    while now() <= exp {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, message) = refused(&gw, "app", &token).await;
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("28P01", "token rejected: token has expired")
    );
}

#[tokio::test]
async fn upstream_auth_methods_and_failures() {
    let pg = Pg::start();
    let issuer = Issuer::new();
    let mut config = base_config(&pg, &issuer);
    for (role, user, password) in [
        ("md5", MD5_USER, APP_PASSWORD),
        ("clear", CLEAR_USER, APP_PASSWORD),
        ("trust", TRUST_USER, ""),
        ("wrongpw", APP_USER, "not-the-password"),
    ] {
        config.push_str(&format!(
            "[roles.{role}]\nuser = \"{user}\"\npassword = \"{password}\"\n\
             upstream = {{ host = \"127.0.0.1\", port = {}, dbname = \"{APP_DB}\", tls = \"disable\" }}\n\
             [[roles.{role}.allow]]\nclaims = {{ repository = \"acme/app\" }}\n",
            pg.port
        ));
    }
    config.push_str(
        "[roles.down]\nuser = \"app\"\npassword = \"x\"\n\
         upstream = { host = \"127.0.0.1\", port = 1, dbname = \"appdb\", tls = \"disable\" }\n\
         [[roles.down.allow]]\nclaims = { repository = \"acme/app\" }\n",
    );
    let gw = start_gateway(&config, AllowAll).await;
    let token = issuer.token(&[]);
    for (role, user) in [
        ("md5", MD5_USER),
        ("clear", CLEAR_USER),
        ("trust", TRUST_USER),
    ] {
        let client = connect(&gw.url(role, &token))
            .await
            .unwrap_or_else(|e| panic!("{role}: {e:?}"));
        let got: String = client
            .query_one("select current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(got, user);
    }
    let err = connect(&gw.url("wrongpw", &token)).await.err().unwrap();
    let (code, message) = db_error(&err);
    assert_eq!(code, "08006");
    assert_eq!(
        message,
        "upstream database rejected the gateway's credential for this role"
    );
    let err = connect(&gw.url("down", &token)).await.err().unwrap();
    let (code, message) = db_error(&err);
    assert_eq!(code, "08006");
    assert!(
        !message.contains("127.0.0.1"),
        "no upstream address for the client: {message}"
    );

    // The upstream credential and the token appear in no log line.
    let logs = captured_logs();
    assert!(
        logs.contains("upstream_failed"),
        "the failure is logged for the operator"
    );
    assert!(!logs.contains(APP_PASSWORD));
    assert!(!logs.contains(&token));
    assert!(!logs.contains("not-the-password"));
}

/// A JWKS endpoint whose key set the test changes, counting its hits.
struct JwksServer {
    url: String,
    body: Arc<std::sync::Mutex<String>>,
    hits: Arc<AtomicUsize>,
}

async fn jwks_server(initial: Value) -> JwksServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/.well-known/jwks", listener.local_addr().unwrap());
    let body = Arc::new(std::sync::Mutex::new(initial.to_string()));
    let hits = Arc::new(AtomicUsize::new(0));
    let (b, h) = (body.clone(), hits.clone());
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let (b, h) = (b.clone(), h.clone());
            tokio::spawn(async move {
                let mut req = vec![0u8; 4096];
                let mut n = 0;
                while !req[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut req[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => n += k,
                    }
                }
                h.fetch_add(1, Ordering::SeqCst);
                let body = b.lock().unwrap().clone();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    JwksServer { url, body, hits }
}

fn url_config(pg: &Pg, issuer: &Issuer, url: &str, min_refresh: &str) -> String {
    base_config(pg, issuer).replace(
        &format!("jwks_file = \"{}\"", issuer.jwks_path()),
        &format!("jwks_url = \"{url}\"\njwks_refresh_min_interval = \"{min_refresh}\""),
    )
}

#[tokio::test]
async fn jwks_url_is_cached_and_refetched_for_a_rotated_key() {
    let pg = Pg::start();
    let issuer = Issuer::new();
    let server = jwks_server(json!({ "keys": [rsa_jwk(RSA_KEY, "rsa1")] })).await;
    let gw = start_gateway(&url_config(&pg, &issuer, &server.url, "0s"), AllowAll).await;

    let good = sign(Algorithm::RS256, "rsa1", RSA_KEY, &claims(json!({})));
    connect(&gw.url("app", &good)).await.unwrap();
    connect(&gw.url("app", &good)).await.unwrap();
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        1,
        "known kids are served from the cache"
    );

    // The issuer rotates: a token with a new kid arrives before the gateway knows it.
    let rotated = sign(Algorithm::RS256, "rsa2", RSA_OTHER, &claims(json!({})));
    let (code, message) = refused(&gw, "app", &rotated).await;
    assert_eq!(
        (code.as_str(), message.contains("signing key is unknown")),
        ("28P01", true)
    );
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        2,
        "an unknown kid triggers one refetch"
    );
    *server.body.lock().unwrap() =
        json!({ "keys": [rsa_jwk(RSA_KEY, "rsa1"), rsa_jwk(RSA_OTHER, "rsa2")] }).to_string();
    connect(&gw.url("app", &rotated))
        .await
        .expect("the rotated key is picked up");
    assert_eq!(server.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn unknown_kids_refetch_at_most_once_per_interval() {
    let pg = Pg::start();
    let issuer = Issuer::new();
    let server = jwks_server(json!({ "keys": [rsa_jwk(RSA_KEY, "rsa1")] })).await;
    let gw = start_gateway(&url_config(&pg, &issuer, &server.url, "1h"), AllowAll).await;
    connect(&gw.url(
        "app",
        &sign(Algorithm::RS256, "rsa1", RSA_KEY, &claims(json!({}))),
    ))
    .await
    .unwrap();
    // A flood of tokens with made-up kids cannot make the gateway hammer the issuer.
    for i in 0..10 {
        let forged = sign(
            Algorithm::RS256,
            &format!("made-up-{i}"),
            RSA_OTHER,
            &claims(json!({})),
        );
        assert_eq!(refused(&gw, "app", &forged).await.0, "28P01");
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
}

//! A local development issuer: an Ed25519 key pair, its JWKS, and token minting.
//!
//! For demos and tests only. Production tokens come from a real OIDC issuer
//! (GitHub Actions, GitLab CI, Kubernetes, ...), whose JWKS URL the config names.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// File name of the private key inside a key directory.
pub const KEY_FILE: &str = "dev-issuer.pem";
/// File name of the public JWKS inside a key directory.
pub const JWKS_FILE: &str = "jwks.json";

/// The key id of a public key: a short SHA-256 thumbprint.
pub fn key_id(key: &SigningKey) -> String {
    let digest = Sha256::digest(key.verifying_key().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The JWKS publishing `key`'s public half.
pub fn jwks(key: &SigningKey) -> Value {
    json!({ "keys": [{
        "kty": "OKP",
        "crv": "Ed25519",
        "use": "sig",
        "alg": "EdDSA",
        "kid": key_id(key),
        "x": URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes()),
    }]})
}

/// Writes a new key pair into `dir`: the private key (mode 0600) and the JWKS.
/// Refuses to overwrite an existing key.
pub fn keygen(dir: &Path) -> Result<SigningKey> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let key_path = dir.join(KEY_FILE);
    if key_path.exists() {
        bail!(
            "{} exists; remove it to generate a new key",
            key_path.display()
        );
    }
    let mut seed = [0u8; 32];
    rand::fill(&mut seed);
    let key = SigningKey::from_bytes(&seed);
    let pem = key.to_pkcs8_pem(LineEnding::LF).context("encode key")?;
    write_private(&key_path, pem.as_bytes())?;
    std::fs::write(dir.join(JWKS_FILE), serde_json::to_vec_pretty(&jwks(&key))?)?;
    Ok(key)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

/// Reads a private key written by [`keygen`].
pub fn load_key(path: &Path) -> Result<SigningKey> {
    let pem = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// What goes into a minted token.
#[derive(Debug, Clone)]
pub struct MintRequest {
    /// `iss`.
    pub issuer: String,
    /// `aud`.
    pub audience: String,
    /// `sub`.
    pub subject: String,
    /// Lifetime from now; `exp = now + ttl`.
    pub ttl: Duration,
    /// Further claims (they may override the standard ones, for negative tests).
    pub claims: Map<String, Value>,
}

/// Signs a token with `key` (EdDSA, `kid` set).
pub fn mint(key: &SigningKey, req: &MintRequest) -> Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut claims = Map::new();
    claims.insert("iss".into(), req.issuer.clone().into());
    claims.insert("aud".into(), req.audience.clone().into());
    claims.insert("sub".into(), req.subject.clone().into());
    claims.insert("iat".into(), now.into());
    claims.insert("nbf".into(), now.into());
    claims.insert("exp".into(), (now + req.ttl.as_secs()).into());
    let mut jti = [0u8; 16];
    rand::fill(&mut jti);
    claims.insert("jti".into(), URL_SAFE_NO_PAD.encode(jti).into());
    for (k, v) in &req.claims {
        claims.insert(k.clone(), v.clone());
    }
    let mut header = Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(key_id(key));
    let der = key.to_pkcs8_der().context("encode key")?;
    let enc = EncodingKey::from_ed_der(der.as_bytes());
    Ok(jsonwebtoken::encode(&header, &claims, &enc)?)
}

/// Parses `KEY=VALUE` (a string claim) or `KEY:=JSON` (any JSON value).
pub fn parse_claim(arg: &str) -> Result<(String, Value)> {
    if let Some((k, v)) = arg.split_once(":=") {
        let value = serde_json::from_str(v).with_context(|| format!("claim {k}: not JSON: {v}"))?;
        return Ok((k.to_owned(), value));
    }
    match arg.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), Value::String(v.to_owned()))),
        _ => bail!("claim must be KEY=VALUE or KEY:=JSON, got {arg:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_verify_against_the_written_jwks() {
        let dir = tempfile::tempdir().unwrap();
        let key = keygen(dir.path()).unwrap();
        assert!(keygen(dir.path()).is_err(), "never overwrites a key");
        let loaded = load_key(&dir.path().join(KEY_FILE)).unwrap();
        assert_eq!(key_id(&loaded), key_id(&key));
        let (k, v) = parse_claim("groups:=[\"dba\"]").unwrap();
        let req = MintRequest {
            issuer: "gatehouse-dev".into(),
            audience: "gatehouse".into(),
            subject: "ci".into(),
            ttl: Duration::from_secs(60),
            claims: [(k, v), parse_claim("repository=acme/etl").unwrap()]
                .into_iter()
                .collect(),
        };
        let token = mint(&loaded, &req).unwrap();
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_slice(&std::fs::read(dir.path().join(JWKS_FILE)).unwrap()).unwrap();
        let dk = jsonwebtoken::DecodingKey::from_jwk(&set.keys[0]).unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        v.set_audience(&["gatehouse"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(&token, &dk, &v).unwrap();
        assert_eq!(data.claims["repository"], "acme/etl");
        assert_eq!(data.claims["groups"][0], "dba");
        assert_eq!(data.header.kid.as_deref(), Some(key_id(&key).as_str()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "private key is not readable by others");
        }
    }

    #[test]
    fn claim_syntax() {
        assert_eq!(
            parse_claim("a=b=c").unwrap(),
            ("a".into(), Value::String("b=c".into()))
        );
        assert_eq!(parse_claim("n:=5").unwrap(), ("n".into(), json!(5)));
        assert!(parse_claim("novalue").is_err());
        assert!(parse_claim("x:={bad").is_err());
    }
}

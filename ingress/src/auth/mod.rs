//! Who is calling: validates the JWT a client sends as its password, and decides
//! whether that identity may assume the role it asked for.

pub mod jwks;

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_schemas::Identity;
use jsonwebtoken::{DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::{AllowRule, IssuerConfig};
use crate::error::{AuthError, ConfigError};
use jwks::{Jwks, JwksSource};

/// A token's identity with the issuer entry that vouched for it.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The name of the `[[issuers]]` entry.
    pub issuer_name: String,
    /// The identity.
    pub identity: Identity,
}

struct Issuer {
    config: IssuerConfig,
    keys: Jwks,
}

/// Validates tokens against the configured issuers.
pub struct Authenticator {
    issuers: Vec<Issuer>,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    kid: Option<String>,
}

#[derive(Deserialize)]
struct RawIss {
    iss: Option<String>,
}

fn decode_part<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)
}

impl Authenticator {
    /// Builds the issuers; `http` is used for JWKS URLs.
    pub fn new(configs: &[IssuerConfig], http: reqwest::Client) -> Result<Self, ConfigError> {
        let issuers = configs
            .iter()
            .map(|c| {
                let source = match (&c.jwks_url, &c.jwks_file) {
                    (Some(url), None) => JwksSource::Url(url.clone()),
                    (None, Some(file)) => JwksSource::File(file.clone()),
                    _ => {
                        return Err(ConfigError::Invalid(format!(
                            "issuer {}: give exactly one of jwks_url and jwks_file",
                            c.name
                        )));
                    }
                };
                Ok(Issuer {
                    keys: Jwks::new(
                        source,
                        http.clone(),
                        c.jwks_refresh_min_interval,
                        c.jwks_cache_ttl,
                    ),
                    config: c.clone(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { issuers })
    }

    /// Validates a token: issuer, algorithm allowlist, key, signature, `exp`,
    /// `nbf`, `aud`. The error names the failed check and nothing about the key.
    pub async fn verify(&self, token: &str) -> Result<Verified, AuthError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(_sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let header: RawHeader = decode_part(h)?;
        let RawIss { iss } = decode_part(p)?;
        let iss = iss.ok_or_else(|| AuthError::MissingClaim("iss".into()))?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.issuer == iss)
            .ok_or(AuthError::UnknownIssuer)?;

        // The allowlist is checked on the raw header so that `none`, HS256 and
        // anything else a library might accept are refused before any key is used.
        let alg = issuer
            .config
            .algorithms
            .iter()
            .find(|a| format!("{a:?}") == header.alg)
            .copied()
            .ok_or_else(|| AuthError::AlgorithmNotAllowed(sanitize(&header.alg)))?
            .to_jwt();

        let key = self.key_for(issuer, header.kid.as_deref(), alg).await?;

        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&issuer.config.issuer]);
        validation.set_audience(&issuer.config.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = issuer.config.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(map_jwt_error)?;
        let claims = data.claims;
        let subject = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(AuthError::MissingClaim("sub".into())),
        };
        Ok(Verified {
            issuer_name: issuer.config.name.clone(),
            identity: Identity {
                issuer: iss,
                subject,
                key_id: header.kid,
                algorithm: header.alg,
                claims,
            },
        })
    }

    async fn key_for(
        &self,
        issuer: &Issuer,
        kid: Option<&str>,
        alg: jsonwebtoken::Algorithm,
    ) -> Result<DecodingKey, AuthError> {
        let mut set = issuer.keys.keys(false).await?;
        let mut jwk = find_key(&set, kid, alg);
        if jwk.is_none() {
            // Issuers rotate keys: an unknown kid may be a new one.
            set = issuer.keys.keys(true).await?;
            jwk = find_key(&set, kid, alg);
        }
        let jwk = jwk.ok_or(AuthError::UnknownKey)?;
        if let Some(key_alg) = jwk.common.key_algorithm
            && format!("{key_alg:?}") != format!("{alg:?}")
        {
            // The key is published for another algorithm: never use it for this one.
            return Err(AuthError::AlgorithmNotAllowed(format!("{alg:?}")));
        }
        DecodingKey::from_jwk(jwk).map_err(|_| AuthError::UnknownKey)
    }
}

/// The key named by `kid`; without a `kid`, the only key fit for `alg`.
fn find_key<'a>(
    set: &'a jsonwebtoken::jwk::JwkSet,
    kid: Option<&str>,
    alg: jsonwebtoken::Algorithm,
) -> Option<&'a jsonwebtoken::jwk::Jwk> {
    match kid {
        Some(kid) => set.find(kid),
        None => {
            let family = alg.family();
            let mut fit = set.keys.iter().filter(|k| {
                DecodingKey::from_jwk(k)
                    .map(|d| d.family() == family)
                    .unwrap_or(false)
            });
            match (fit.next(), fit.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            }
        }
    }
}

/// A header value echoed to the client is bounded and printable.
fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(16)
        .collect()
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => AuthError::Expired,
        K::ImmatureSignature => AuthError::NotYetValid,
        K::InvalidAudience => AuthError::WrongAudience,
        K::InvalidIssuer => AuthError::UnknownIssuer,
        K::InvalidSignature => AuthError::BadSignature,
        K::InvalidAlgorithm | K::InvalidAlgorithmName | K::UnsupportedAlgorithm => {
            AuthError::AlgorithmNotAllowed("for this key".into())
        }
        K::MissingRequiredClaim(c) | K::InvalidClaimFormat(c) => {
            AuthError::MissingClaim(sanitize(c))
        }
        _ => AuthError::Malformed,
    }
}

/// Whether `verified` may assume a role with these allow rules.
pub fn may_assume(rules: &[AllowRule], verified: &Verified) -> bool {
    rules.iter().any(|r| {
        r.issuer
            .as_deref()
            .is_none_or(|want| want == verified.issuer_name)
            && gatehouse_decider::claims::all_match(&r.claims, &verified.identity.claims)
    })
}

/// Shared handle.
pub type SharedAuthenticator = Arc<Authenticator>;

/// The approver proves who an approver is as the gateway proves who a
/// caller is: with a token from one of its own issuers.
impl gatehouse_approver::TokenVerifier for Authenticator {
    fn verify<'a>(
        &'a self,
        token: &'a str,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<gatehouse_schemas::Identity, String>>
                + Send
                + 'a,
        >,
    > {
        use crate::error::UserFacing;
        Box::pin(async move {
            Authenticator::verify(self, token)
                .await
                .map(|v| v.identity)
                .map_err(|e| e.client_message())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_decider::claims::{ClaimConditions, ClaimMatch};

    fn verified(issuer_name: &str) -> Verified {
        let mut claims = Map::new();
        claims.insert("repository".into(), "acme/etl".into());
        Verified {
            issuer_name: issuer_name.into(),
            identity: Identity {
                issuer: "https://x".into(),
                subject: "s".into(),
                key_id: None,
                algorithm: "RS256".into(),
                claims,
            },
        }
    }

    #[test]
    fn allow_rules_check_the_issuer_and_every_claim() {
        let mut claims = ClaimConditions::new();
        claims.insert("repository".into(), ClaimMatch::Equals("acme/etl".into()));
        let rule = AllowRule {
            issuer: Some("github".into()),
            claims,
        };
        assert!(may_assume(std::slice::from_ref(&rule), &verified("github")));
        assert!(
            !may_assume(std::slice::from_ref(&rule), &verified("gitlab")),
            "another issuer"
        );
        let mut other = rule.clone();
        other
            .claims
            .insert("ref".into(), ClaimMatch::Equals("refs/heads/main".into()));
        assert!(
            !may_assume(&[other], &verified("github")),
            "a missing claim never matches"
        );
        assert!(!may_assume(&[], &verified("github")), "no rules: nobody");
    }
}

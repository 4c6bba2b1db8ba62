//! TLS on both sides: clients reach the gateway over TLS (psql with
//! verify-full), tokens never travel in cleartext unless allowed, and the
//! gateway verifies the upstream with libpq's sslmode semantics.

mod harness;

use harness::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer as CaIssuer, KeyPair};

struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

/// A CA and a server certificate for `localhost`.
fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "gatehouse test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca = CaIssuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki {
        dir,
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    };
    for (name, body) in [
        ("ca.pem", &pki.ca_pem),
        ("server.crt", &pki.cert_pem),
        ("server.key", &pki.key_pem),
    ] {
        std::fs::write(pki.path(name), body).unwrap();
    }
    pki
}

impl Pki {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

#[tokio::test]
async fn clients_connect_over_tls_and_cleartext_tokens_are_refused() {
    let pg = Pg::start();
    let issuer = Issuer::new();
    let pki = pki();
    let config = base_config(&pg, &issuer).replace(
        "allow_cleartext_without_tls = true",
        &format!(
            "allow_cleartext_without_tls = false\ntls = {{ cert = \"{}\", key = \"{}\" }}",
            pki.path("server.crt"),
            pki.path("server.key")
        ),
    );
    let gw = start_gateway(&config, AllowAll).await;
    let token = issuer.token(&[]);
    let port = gw.addr.port();

    let verified = format!(
        "hostaddr=127.0.0.1 host=localhost port={port} user=app dbname=appdb sslmode=verify-full sslrootcert={}",
        pki.path("ca.pem")
    );
    let out = psql(&verified, &token, "select current_user")
        .await
        .unwrap();
    assert_eq!(out, "app");

    // Without TLS the token is refused before the client is even asked for it.
    let plain = format!("host=127.0.0.1 port={port} user=app dbname=appdb sslmode=disable");
    let err = psql(&plain, &token, "select 1").await.unwrap_err();
    assert!(err.contains("connect with TLS"), "{err}");
    let mut raw = Raw::open(gw.addr).await;
    raw.send(&startup_message(&[("user", "app")])).await;
    let m = raw.recv().await.unwrap();
    assert_eq!(
        (m.tag, m.field(b'C').as_deref()),
        (b'E', Some("28000")),
        "no password request"
    );

    // A client that checks the certificate against another CA refuses the gateway.
    let other = pki_other_ca();
    let wrong_ca = format!(
        "hostaddr=127.0.0.1 host=localhost port={port} user=app dbname=appdb sslmode=verify-full sslrootcert={}",
        other.path("ca.pem")
    );
    assert!(psql(&wrong_ca, &token, "select 1").await.is_err());
}

fn pki_other_ca() -> Pki {
    pki()
}

fn role(name: &str, port: u16, tls: &str, extra: &str) -> String {
    format!(
        "[roles.{name}]\nuser = \"{APP_USER}\"\npassword = \"{APP_PASSWORD}\"\n\
         upstream = {{ host = \"127.0.0.1\", port = {port}, dbname = \"{APP_DB}\", tls = \"{tls}\"{extra} }}\n\
         [[roles.{name}.allow]]\nclaims = {{ repository = \"acme/app\" }}\n"
    )
}

#[tokio::test]
async fn upstream_tls_modes() {
    let pki = pki();
    let pg = Pg::start_with(PgOptions {
        ssl: Some((pki.cert_pem.clone(), pki.key_pem.clone())),
    });
    let plain_pg = Pg::start();
    let issuer = Issuer::new();
    let other = pki_other_ca();
    let ca = format!(", ca_file = \"{}\"", pki.path("ca.pem"));
    let mut config = base_config(&pg, &issuer);
    config.push_str(&role(
        "full",
        pg.port,
        "verify-full",
        &format!("{ca}, server_name = \"localhost\""),
    ));
    config.push_str(&role("full_wrong_name", pg.port, "verify-full", &ca));
    config.push_str(&role(
        "full_wrong_ca",
        pg.port,
        "verify-full",
        &format!(
            ", ca_file = \"{}\", server_name = \"localhost\"",
            other.path("ca.pem")
        ),
    ));
    config.push_str(&role("ca_only", pg.port, "verify-ca", &ca));
    config.push_str(&role("require", pg.port, "require", ""));
    config.push_str(&role("require_no_tls", plain_pg.port, "require", ""));
    let gw = start_gateway(&config, AllowAll).await;
    let token = issuer.token(&[]);

    for ok in ["full", "ca_only", "require"] {
        let client = connect(&gw.url(ok, &token))
            .await
            .unwrap_or_else(|e| panic!("{ok}: {e:?}"));
        let ssl: bool = client
            .query_one(
                "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(ssl, "{ok}: the upstream connection is encrypted");
    }
    for bad in ["full_wrong_name", "full_wrong_ca", "require_no_tls"] {
        let err = connect(&gw.url(bad, &token))
            .await
            .err()
            .unwrap_or_else(|| panic!("{bad} connected"));
        assert_eq!(db_error(&err).0, "08006", "{bad}");
    }
}

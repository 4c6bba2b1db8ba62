//! The evidence signing key: Ed25519, PKCS#8 PEM private, SPKI PEM public.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::KeyError;

/// File name of the private key written by [`keygen`].
pub const SIGNING_KEY_FILE: &str = "evidence-signing.pem";
/// File name of the public key written by [`keygen`]: what verifiers are given.
pub const VERIFYING_KEY_FILE: &str = "evidence-signing.pub.pem";

/// The id a manifest names its key by: hex of the first 8 bytes of the SHA-256
/// of the raw 32-byte public key.
pub fn key_id(key: &VerifyingKey) -> String {
    hex(&Sha256::digest(key.as_bytes())[..8])
}

pub(crate) use gatehouse_schemas::hex;

/// Reads a PKCS#8 PEM Ed25519 private key (as [`keygen`] or `gatehouse token keygen` write).
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let pem = read(path)?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|e| KeyError::Decode {
        path: path.to_owned(),
        expected: "PKCS#8 private key",
        reason: e.to_string(),
    })
}

/// Reads an SPKI PEM Ed25519 public key (`-----BEGIN PUBLIC KEY-----`).
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let pem = read(path)?;
    VerifyingKey::from_public_key_pem(&pem).map_err(|e| KeyError::Decode {
        path: path.to_owned(),
        expected: "SPKI public key",
        reason: e.to_string(),
    })
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes a new key pair into `dir`: [`SIGNING_KEY_FILE`] (mode 0600, never
/// overwriting) and [`VERIFYING_KEY_FILE`]. Returns the private key.
pub fn keygen(dir: &Path) -> Result<SigningKey, KeyError> {
    let io = |path: &Path| {
        let path: PathBuf = path.to_owned();
        move |source| KeyError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let private = dir.join(SIGNING_KEY_FILE);
    let public = dir.join(VERIFYING_KEY_FILE);
    for p in [&private, &public] {
        if p.exists() {
            return Err(KeyError::Exists(p.clone()));
        }
    }
    let mut seed = [0u8; 32];
    rand::fill(&mut seed);
    let key = SigningKey::from_bytes(&seed);
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError::Encode(e.to_string()))?;
    let pub_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| KeyError::Encode(e.to_string()))?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&private).map_err(io(&private))?;
    f.write_all(pem.as_bytes()).map_err(io(&private))?;
    f.sync_all().map_err(io(&private))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&public)
        .map_err(io(&public))?;
    f.write_all(pub_pem.as_bytes()).map_err(io(&public))?;
    f.sync_all().map_err(io(&public))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_pair_that_loads_back_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let key = keygen(dir.path()).unwrap();
        let loaded = load_signing_key(&dir.path().join(SIGNING_KEY_FILE)).unwrap();
        let public = load_verifying_key(&dir.path().join(VERIFYING_KEY_FILE)).unwrap();
        assert_eq!(loaded.to_bytes(), key.to_bytes());
        assert_eq!(public, key.verifying_key());
        assert_eq!(key_id(&public).len(), 16);
        assert!(matches!(keygen(dir.path()), Err(KeyError::Exists(_))));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SIGNING_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "private key is not readable by others");
        }
        // A public key is not a private key, and the error says which file.
        let err = load_signing_key(&dir.path().join(VERIFYING_KEY_FILE)).unwrap_err();
        assert!(err.to_string().contains(VERIFYING_KEY_FILE), "{err}");
    }

    #[test]
    fn key_id_is_the_sha256_prefix_of_the_raw_public_key() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let digest = Sha256::digest(key.verifying_key().as_bytes());
        assert_eq!(key_id(&key.verifying_key()), hex(&digest[..8]));
    }
}

//! TLS for the demo: trust a given CA, or mint a throwaway CA and a server
//! certificate for `localhost`/`127.0.0.1` (rcgen) for the servers the demo starts,
//! so `--tls` shows the whole walkthrough, push included, over `grpc+tls://`.

use anyhow::{Context, Result};
use mallard::transport::ClientTls;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::path::{Path, PathBuf};

/// How the demo's clients and child servers use TLS.
pub struct DemoTls {
    /// What clients trust.
    pub client: ClientTls,
    /// Certificate files for child servers, when the demo minted them.
    pub server_files: Option<ServerFiles>,
}

/// PEM files a child server is started with.
pub struct ServerFiles {
    /// Server certificate chain.
    pub cert: PathBuf,
    /// Server private key.
    pub key: PathBuf,
    /// The CA that signed it (also what `push_table` trusts).
    pub ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl DemoTls {
    /// Trusts the CA in `ca_file` (for servers someone else started).
    pub fn trusting(ca_file: &Path) -> Result<Self> {
        Ok(Self {
            client: ClientTls::trusting_file(ca_file).context("the CA certificate for --tls-ca")?,
            server_files: None,
        })
    }

    /// Mints a CA and a server certificate for the servers the demo starts.
    pub fn minted() -> Result<Self> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let key = KeyPair::generate()?;
        let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?
            .signed_by(&key, &ca)?;
        let dir = tempfile::tempdir()?;
        let write = |name: &str, pem: &str| -> Result<PathBuf> {
            let path = dir.path().join(name);
            std::fs::write(&path, pem)?;
            Ok(path)
        };
        let files = ServerFiles {
            cert: write("server.pem", &cert.pem())?,
            key: write("server-key.pem", &key.serialize_pem())?,
            ca: write("ca.pem", &ca.pem())?,
            _dir: dir,
        };
        Ok(Self {
            client: ClientTls::trusting(ca.pem().into_bytes()),
            server_files: Some(files),
        })
    }
}

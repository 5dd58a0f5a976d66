//! TLS with generated certificates (rcgen): a TLS server accepts a TLS client and
//! refuses a plain one; with mTLS it also refuses clients without a certificate.

mod common;

use common::*;
use mallard::config::ServerTls;
use mallard::transport::ClientTls;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

struct Pki {
    ca_pem: Vec<u8>,
    server: (Vec<u8>, Vec<u8>),
    client: (Vec<u8>, Vec<u8>),
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (cert.pem().into_bytes(), key.serialize_pem().into_bytes())
    };
    Pki {
        ca_pem: ca.pem().into_bytes(),
        server: leaf(vec!["localhost".into(), "127.0.0.1".into()]),
        client: leaf(vec!["client".into()]),
    }
}

async fn tls_server(pki: &Pki, mtls: bool) -> mallard::RunningServer {
    let mut config = test_config();
    config.tls = Some(ServerTls {
        cert_pem: pki.server.0.clone(),
        key_pem: pki.server.1.clone(),
        client_ca_pem: mtls.then(|| pki.ca_pem.clone()),
    });
    start_with(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_server_accepts_tls_clients_and_refuses_plain_ones() {
    let pki = pki();
    let server = tls_server(&pki, false).await;
    let url = server.url();
    assert!(url.starts_with("grpc+tls://"));
    let tls = ClientTls::trusting(pki.ca_pem.clone());
    let mut client = mallard::client::connect_with(&url, "admin", "password123", Some(&tls))
        .await
        .unwrap();
    assert_eq!(scalar_i64(&mut client, "SELECT 42").await, 42);
    let plain = format!("grpc://{}", server.addr);
    assert!(
        mallard::client::connect(&plain, "admin", "password123")
            .await
            .is_err(),
        "plain client refused"
    );
    let untrusting = ClientTls::default();
    assert!(
        mallard::client::connect_with(&url, "admin", "password123", Some(&untrusting))
            .await
            .is_err()
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_requires_a_client_certificate() {
    let pki = pki();
    let server = tls_server(&pki, true).await;
    let url = server.url();
    let anonymous = ClientTls::trusting(pki.ca_pem.clone());
    let refused =
        match mallard::client::connect_with(&url, "admin", "password123", Some(&anonymous)).await {
            Err(_) => true,
            Ok(mut c) => query(&mut c, "SELECT 1").await.is_err(),
        };
    assert!(refused, "a client without a certificate is refused");
    let known = ClientTls {
        identity: Some(pki.client.clone()),
        ..ClientTls::trusting(pki.ca_pem.clone())
    };
    let mut client = mallard::client::connect_with(&url, "admin", "password123", Some(&known))
        .await
        .unwrap();
    assert_eq!(scalar_i64(&mut client, "SELECT 7").await, 7);
    server.stop().await.unwrap();
}

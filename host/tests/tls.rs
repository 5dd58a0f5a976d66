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

/// Accepts one connection on `listener` and returns what the peer sent first (up
/// to 4 KiB, or what came within two seconds).
async fn first_bytes(listener: tokio::net::TcpListener) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let Ok(Ok((mut stream, _))) =
        tokio::time::timeout(std::time::Duration::from_secs(10), listener.accept()).await
    else {
        return Vec::new();
    };
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(2), stream.read(&mut buf))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    buf.truncate(n);
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_target_allowed_as_tls_is_never_reached_in_plaintext() {
    let pki = pki();
    // A listener standing where a TLS target is allowed: it records what arrives.
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = trap.local_addr().unwrap().port();
    let target = tls_server(&pki, false).await;
    let mut config = test_config();
    config.push_allow = vec![
        mallard_protocol::PushTarget::parse(&format!("grpc+tls://127.0.0.1:{port}")).unwrap(),
        mallard_protocol::PushTarget::parse(&format!("grpc+tls://{}", target.addr)).unwrap(),
    ];
    config.push_tls = Some(ClientTls::trusting(pki.ca_pem.clone()));
    let source = start_with(config).await;
    let mut admin = client(&source).await;
    put(&mut admin, "t", flights(10, 10)).await.unwrap();

    // Spelled in capitals, the target is still reached with TLS: the first byte is
    // a TLS handshake record, and neither the HTTP/2 preface nor the credentials
    // ever cross in the clear.
    let received = tokio::spawn(first_bytes(trap));
    let body = serde_json::json!({
        "table": "t",
        "to": format!("GRPC+TLS://LOCALHOST:{port}"),
        "user": "pushing-user",
        "password": "pushing-secret",
    });
    let err = action(&mut admin, "push_table", body.to_string())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    let received = received.await.unwrap();
    assert_eq!(
        received.first(),
        Some(&0x16),
        "not a TLS ClientHello: {received:?}"
    );
    let text = String::from_utf8_lossy(&received);
    assert!(!text.contains("PRI * HTTP/2.0"), "{text}");
    let basic = mallard_protocol::credentials::basic_header("pushing-user", "pushing-secret");
    assert!(!text.contains("pushing-secret") && !text.contains(basic.trim_start_matches("Basic ")));

    // The same target as plain gRPC is not allowed at all.
    let body = serde_json::json!({"table": "t", "to": format!("grpc://127.0.0.1:{port}")});
    let err = action(&mut admin, "push_table", body.to_string())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");

    // A real TLS target, spelled any way, receives the rows over verified TLS.
    let to = format!("Grpc+Tls://{}", target.addr);
    let body = serde_json::json!({"table": "t", "to": to, "target_table": "pushed"});
    let pushed = action(&mut admin, "push_table", body.to_string())
        .await
        .unwrap();
    assert_eq!(pushed["rows"], 10);
    source.stop().await.unwrap();
    target.stop().await.unwrap();
}

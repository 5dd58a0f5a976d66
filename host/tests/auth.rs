//! Authentication: every call without valid credentials is Unauthenticated; Basic
//! on any call earns a bearer token; tokens expire and can be revoked.

mod common;

use arrow_flight::{FlightClient, Ticket};
use common::*;
use std::time::Duration;
use tonic::Code;

async fn raw_client(url: &str) -> FlightClient {
    FlightClient::new(mallard::transport::connect(url).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_valid_credentials_are_unauthenticated() {
    let server = start().await;
    let mut anonymous = raw_client(&server.url()).await;
    let err = anonymous
        .do_get(Ticket::new("SELECT 42"))
        .await
        .err()
        .map(to_status)
        .unwrap();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");

    let wrong_password = mallard::auth::basic_header("admin", "nope");
    for header in [wrong_password.as_str(), "Bearer not-a-real-token"] {
        let mut client = raw_client(&server.url()).await;
        client.add_header("authorization", header).unwrap();
        let err = client
            .do_get(Ticket::new("SELECT 42"))
            .await
            .err()
            .map(to_status)
            .unwrap();
        assert_eq!(err.code(), Code::Unauthenticated, "{header}: {err}");
    }
    assert!(
        mallard::client::connect(&server.url(), "admin", "wrong")
            .await
            .is_err()
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_on_any_call_is_answered_with_a_bearer_token() {
    let server = start().await;
    let mut inner = raw_client(&server.url()).await.into_inner();
    let mut request = tonic::Request::new(Ticket::new("SELECT 42"));
    let basic = mallard::auth::basic_header("admin", "password123");
    request
        .metadata_mut()
        .insert("authorization", basic.parse().unwrap());
    let response = inner.do_get(request).await.unwrap();
    let header = response
        .metadata()
        .get("authorization")
        .expect("bearer header")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(header.starts_with("Bearer "));
    let token = header.trim_start_matches("Bearer ");
    assert!(token.len() >= 43, "token carries at least 256 bits");

    let mut bearer = raw_client(&server.url()).await;
    bearer.add_header("authorization", &header).unwrap();
    assert_eq!(
        drain(bearer.do_get(Ticket::new("SELECT 42")).await.unwrap())
            .await
            .unwrap(),
        1
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_revoked_tokens_are_refused() {
    let mut config = test_config();
    config.token_ttl = Duration::from_millis(300);
    let server = start_with(config).await;
    let mut client = client(&server).await;
    assert_eq!(scalar_i64(&mut client, "SELECT 42").await, 42);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let err = query(&mut client, "SELECT 42").await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("expired"), "{err}");

    let server2 = start().await;
    let mut client = common::client(&server2).await;
    action(&mut client, "logout", "").await.unwrap();
    let err = query(&mut client, "SELECT 1").await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    server.stop().await.unwrap();
    server2.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_role_cannot_upload_or_drop() {
    let mut config = test_config();
    config.users.insert(
        "reader".into(),
        mallard::auth::User::new("pw", mallard::auth::Role::Reader),
    );
    config.users.insert(
        "admin".into(),
        mallard::auth::User::new("password123", mallard::auth::Role::Admin),
    );
    let server = start_with(config).await;
    let mut reader = mallard::client::connect(&server.url(), "reader", "pw")
        .await
        .unwrap();
    let err = action(&mut reader, "upload_exchanger", vec![0u8, 97, 115, 109])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("needs role user"), "{err}");
    let err = action(&mut reader, "drop_table", "t").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(scalar_i64(&mut reader, "SELECT 7").await, 7);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_from_a_file_with_argon2_hashes() {
    let hash = mallard::auth::hash_password("s3cret-pass");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let file =
        format!("[[user]]\nname = \"alice\"\npassword_hash = \"{hash}\"\nrole = \"admin\"\n");
    let mut config = test_config();
    config.users = mallard::auth::parse_users_file(&file).unwrap();
    let server = start_with(config).await;
    let mut alice = mallard::client::connect(&server.url(), "alice", "s3cret-pass")
        .await
        .unwrap();
    assert_eq!(scalar_i64(&mut alice, "SELECT 5").await, 5);
    assert!(
        mallard::client::connect(&server.url(), "alice", "wrong")
            .await
            .is_err()
    );
    assert!(
        mallard::client::connect(&server.url(), "admin", "password123")
            .await
            .is_err(),
        "no default user"
    );
    assert!(
        mallard::auth::parse_users_file(
            "[[user]]\nname = \"x\"\npassword_hash = \"plain\"\nrole = \"user\"\n"
        )
        .is_err()
    );
    server.stop().await.unwrap();
}

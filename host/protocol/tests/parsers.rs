//! Each parser on good input, and on each kind of bad input the server must refuse
//! with a precise error (the server maps these to InvalidArgument, NotFound and
//! Unauthenticated).

use bytes::Bytes;
use mallard_protocol::credentials::{Credentials, basic_header, parse_authorization};
use mallard_protocol::descriptor::{self, CMD, PATH, Target};
use mallard_protocol::users::{Role, parse_users_file};
use mallard_protocol::{
    ActionRequest, ExchangeRequest, MAX_STAGES, ProtocolError, PushRequest, Sandbox,
};

fn invalid<T: std::fmt::Debug>(r: Result<T, ProtocolError>, needle: &str) {
    match r {
        Err(ProtocolError::Invalid(m)) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
        other => panic!("expected Invalid({needle:?}), got {other:?}"),
    }
}

#[test]
fn actions_parse_their_bodies() {
    let drop = ActionRequest::parse("drop_table", Bytes::from_static(b"  x; DROP TABLE y\n"));
    match drop.unwrap() {
        ActionRequest::DropTable(t) => assert_eq!(t.quoted(), "\"x; DROP TABLE y\""),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        ActionRequest::parse("bogus", Bytes::new()),
        Err(ProtocolError::UnknownAction(m)) if m.contains("bogus")
    ));
    invalid(
        ActionRequest::parse("sql", Bytes::from_static(b"\xff\xfe")),
        "UTF-8",
    );
    invalid(
        ActionRequest::parse("sql", Bytes::from_static(b"  ")),
        "empty",
    );
    invalid(
        ActionRequest::parse("drop_table", Bytes::from_static(b"a\0b")),
        "control",
    );
    invalid(
        ActionRequest::parse("drop_table", Bytes::from(vec![b'a'; 256])),
        "longer",
    );
    invalid(
        ActionRequest::parse("push_table", Bytes::from_static(b"[1")),
        "JSON",
    );
}

#[test]
fn push_requests_are_validated() {
    let ok = PushRequest::parse(br#"{"table":"t","to":"grpc+tls://h:1"}"#).unwrap();
    assert_eq!(ok.target_table.as_str(), "t");
    assert_eq!(ok.credentials, None);
    let named = PushRequest::parse(
        br#"{"table":"t","to":"grpc://h:1","target_table":"u","user":"a","password":"b"}"#,
    )
    .unwrap();
    assert_eq!(named.target_table.as_str(), "u");
    assert_eq!(named.credentials, Some(("a".into(), "b".into())));
    invalid(
        PushRequest::parse(br#"{"table":"t","to":"file:///etc"}"#),
        "grpc://",
    );
    invalid(
        PushRequest::parse(br#"{"table":"t","to":"grpc://h"}"#),
        "port",
    );
    invalid(
        PushRequest::parse(br#"{"table":"t","to":"grpc://h:1","user":"a"}"#),
        "both",
    );
    invalid(
        PushRequest::parse(br#"{"table":"","to":"grpc://h:1"}"#),
        "empty",
    );
    invalid(
        PushRequest::parse(br#"{"table":"t","to":"grpc://h","extra":1}"#),
        "unknown field",
    );
}

#[test]
fn pushes_of_queries_through_exchanges() {
    let piped = PushRequest::parse(
        br#"{"query":"SELECT * FROM flights","exchangers":[{"exchanger":"add_processed"}],"to":"grpc://h:1","target_table":"p"}"#,
    )
    .unwrap();
    assert_eq!(
        piped.source,
        mallard_protocol::push::PushSource::Query("SELECT * FROM flights".into())
    );
    assert_eq!(piped.exchange.unwrap().stages.len(), 1);
    let named =
        PushRequest::parse(br#"{"table":"t","exchangers":"add_processed","to":"grpc://h:1"}"#)
            .unwrap();
    assert_eq!(
        named.exchange.unwrap().stages[0].exchanger.to_string(),
        "add_processed"
    );
    invalid(
        PushRequest::parse(br#"{"query":"SELECT 1","to":"grpc://h:1"}"#),
        "target_table",
    );
    invalid(
        PushRequest::parse(br#"{"table":"t","query":"SELECT 1","to":"grpc://h:1"}"#),
        "either",
    );
    invalid(
        PushRequest::parse(br#"{"table":"t","exchangers":[],"to":"grpc://h:1"}"#),
        "at least one stage",
    );
}

#[test]
fn descriptors_and_tickets() {
    assert_eq!(descriptor::put_table(CMD, b"t", &[]).unwrap().as_str(), "t");
    assert_eq!(
        descriptor::put_table(PATH, b"", &["p".into()])
            .unwrap()
            .as_str(),
        "p"
    );
    invalid(descriptor::put_table(0, b"t", &[]), "CMD or PATH");
    invalid(
        descriptor::put_table(PATH, b"", &["a".into(), "b".into()]),
        "2 elements",
    );
    assert_eq!(
        descriptor::info_target(CMD, b"SELECT 1", &[]).unwrap(),
        Target::Sql("SELECT 1".into())
    );
    invalid(descriptor::ticket_sql(b"\xc3\x28"), "UTF-8");
    invalid(descriptor::ticket_sql(b""), "empty");
}

#[test]
fn exchange_requests() {
    let bare = ExchangeRequest::parse(b" add_processed ").unwrap();
    assert_eq!(bare.stages.len(), 1);
    assert_eq!(
        (
            bare.stages[0].exchanger.to_string().as_str(),
            bare.stages[0].sandbox
        ),
        ("add_processed", Sandbox::On)
    );
    let json = ExchangeRequest::parse(
        br#"{"exchanger":"running_totals","params":{"value":"passengers","n":3},"sandbox":"off"}"#,
    )
    .unwrap();
    let stage = &json.stages[0];
    assert_eq!(stage.sandbox, Sandbox::Off);
    assert_eq!(
        stage.params,
        vec![
            ("n".into(), "3".into()),
            ("value".into(), "passengers".into())
        ]
    );
    invalid(
        ExchangeRequest::parse(br#"{"exchanger":"x","sandbox":"maybe"}"#),
        "JSON",
    );
    invalid(ExchangeRequest::parse(b"\n"), "empty");
}

#[test]
fn exchange_pipelines() {
    let two = ExchangeRequest::parse(
        br#"[{"exchanger":"add_processed"},{"exchanger":"alice/running_totals@1.0.0","params":{"value":"x"}}]"#,
    )
    .unwrap();
    let names: Vec<String> = two.stages.iter().map(|s| s.exchanger.to_string()).collect();
    assert_eq!(names, ["add_processed", "alice/running_totals@1.0.0"]);
    assert_eq!(two.stages[1].params, vec![("value".into(), "x".into())]);
    invalid(ExchangeRequest::parse(b"[]"), "at least one stage");
    let at_limit = format!("[{}]", [r#"{"exchanger":"a"}"#; MAX_STAGES].join(","));
    assert_eq!(
        ExchangeRequest::parse(at_limit.as_bytes())
            .unwrap()
            .stages
            .len(),
        MAX_STAGES
    );
    let over = format!("[{}]", [r#"{"exchanger":"a"}"#; MAX_STAGES + 1].join(","));
    invalid(ExchangeRequest::parse(over.as_bytes()), "at most");
    invalid(ExchangeRequest::parse(br#"[{"exchanger":"Bad Name"}]"#), "");
    invalid(
        ExchangeRequest::parse(br#"[{"exchanger":"a","extra":1}]"#),
        "JSON",
    );
}

#[test]
fn authorization_headers() {
    let header = basic_header("alice", "pa:ss");
    assert_eq!(
        parse_authorization(&header).unwrap(),
        Credentials::Basic {
            user: "alice".into(),
            password: "pa:ss".into()
        }
    );
    assert_eq!(
        parse_authorization("bearer  tok ").unwrap(),
        Credentials::Bearer("tok")
    );
    for bad in ["Basic !!!", "Basic bm9jb2xvbg==", "Digest x", "Bearer"] {
        assert!(
            matches!(
                parse_authorization(bad),
                Err(ProtocolError::BadCredentials(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn users_files() {
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$ZmFrZWhhc2hmYWtlaGFzaGZha2VoYXNoZmFrZWg";
    let users = parse_users_file(&format!(
        "[[user]]\nname = \"a\"\npassword_hash = \"{hash}\"\nrole = \"admin\"\n"
    ))
    .unwrap();
    assert_eq!((users[0].name.as_str(), users[0].role), ("a", Role::Admin));
    invalid(
        parse_users_file("[[user]]\nname = \"a\"\npassword_hash = \"plain\"\nrole = \"user\"\n"),
        "argon2",
    );
    let twice = format!(
        "[[user]]\nname = \"a\"\npassword_hash = \"{hash}\"\nrole = \"user\"\n\
         [[user]]\nname = \"a\"\npassword_hash = \"{hash}\"\nrole = \"admin\"\n"
    );
    invalid(parse_users_file(&twice), "twice");
    invalid(parse_users_file("[[user]]\nname = 1\n"), "users file");
}

//! One entry point over every parser, shared by the fuzz target (`fuzz/`) and the
//! test that replays its corpus. The first byte picks the parser, the rest is its
//! input; besides "never panics", a few round-trip properties are asserted.

use crate::action::{ACTIONS, ActionRequest};
use crate::credentials::{Credentials, basic_header, parse_authorization};
use crate::descriptor;
use crate::exchange::ExchangeRequest;
use crate::exchanger_ref::ExchangerRef;
use crate::push::PushRequest;
use crate::table_name::TableName;
use crate::upload::UploadRequest;
use crate::users::parse_users_file;
use bytes::Bytes;

/// Runs the parser `data[0]` selects on `data[1..]`; panics only on a bug.
pub fn exercise_parsers(data: &[u8]) {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    match selector % 10 {
        0 => {
            // An action: the next byte picks the kind (or an unknown one).
            let Some((&kind, body)) = input.split_first() else {
                return;
            };
            let kind = ACTIONS.get(kind as usize).map_or("no_such_action", |a| a.0);
            let _ = ActionRequest::parse(kind, Bytes::copy_from_slice(body));
        }
        1 => {
            let _ = PushRequest::parse(input);
        }
        2 => {
            let _ = ExchangeRequest::parse(input);
        }
        3 => {
            // A descriptor: type byte, then cmd and path elements split on 0xff.
            let Some((&kind, rest)) = input.split_first() else {
                return;
            };
            let mut parts = rest.split(|b| *b == 0xff);
            let cmd = parts.next().unwrap_or_default();
            let path: Vec<String> = parts.map(|p| String::from_utf8_lossy(p).into()).collect();
            let _ = descriptor::put_table(i32::from(kind % 4), cmd, &path);
            let _ = descriptor::info_target(i32::from(kind % 4), cmd, &path);
            let _ = descriptor::ticket_sql(cmd);
        }
        4 => {
            if let Ok(name) = TableName::from_bytes(input) {
                let quoted = name.quoted();
                let inner = &quoted[1..quoted.len() - 1];
                assert_eq!(inner.replace("\"\"", "\""), name.as_str());
            }
        }
        5 => {
            if let Ok(header) = std::str::from_utf8(input) {
                let _ = parse_authorization(header);
            }
        }
        6 => {
            // Any user without ':' and any password survive Basic encoding.
            let text = String::from_utf8_lossy(input);
            let (user, password) = text.split_once('\u{1}').unwrap_or((&text, ""));
            if !user.contains(':') {
                let header = basic_header(user, password);
                let expected = Credentials::Basic {
                    user: user.to_owned(),
                    password: password.to_owned(),
                };
                assert_eq!(parse_authorization(&header), Ok(expected));
            }
        }
        7 => {
            if let Ok(text) = std::str::from_utf8(input) {
                let _ = parse_users_file(text);
            }
        }
        8 => {
            // A reference that parses prints as one that parses to the same.
            if let Ok(text) = std::str::from_utf8(input)
                && let Ok(reference) = ExchangerRef::parse(text)
            {
                assert_eq!(ExchangerRef::parse(&reference.to_string()), Ok(reference));
            }
        }
        _ => {
            if let Ok(request) = UploadRequest::parse(Bytes::copy_from_slice(input)) {
                let again = UploadRequest::encode(&request.component, &request.options);
                let reparsed = UploadRequest::parse(Bytes::from(again)).expect("re-encoded");
                assert_eq!(reparsed.options, request.options);
            }
        }
    }
}

/// The Flight SQL decoding a client reaches before any work, on arbitrary bytes:
/// an even first byte decodes a command (and checks that a decoded one encodes
/// back to the same type); an odd one reads the rest as parameter messages, each
/// a 2-byte header length, a 2-byte body length and the bytes, after a schema
/// message framed the same way.
pub fn exercise_flight_sql(data: &[u8]) {
    use prost::Message;
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        if let Some(Ok(command)) = crate::flight_sql::decode_command(input) {
            let type_url = command.type_url().to_owned();
            let again = command.into_any().encode_to_vec();
            match crate::flight_sql::decode_command(&again) {
                Some(Ok(decoded)) => assert_eq!(decoded.type_url(), type_url),
                other => panic!("a decoded command did not decode again: {other:?}"),
            }
        }
        return;
    }
    let mut messages = Vec::new();
    let mut rest = input;
    while rest.len() >= 4 {
        let header_len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        let body_len = usize::from(u16::from_le_bytes([rest[2], rest[3]]));
        rest = &rest[4..];
        let header = &rest[..header_len.min(rest.len())];
        rest = &rest[header.len()..];
        let body = &rest[..body_len.min(rest.len())];
        rest = &rest[body.len()..];
        messages.push((Bytes::copy_from_slice(header), Bytes::copy_from_slice(body)));
    }
    let _ = crate::flight_sql::decode_parameters(messages, 1_024, "parameters");
}

/// A client's FlightData stream in pieces of `data[0] % 64 + 1` bytes. When
/// `data[1]` is even the rest is one message the harness frames, and whatever the
/// parser accepts must be what prost reads from the same bytes; when odd the rest
/// is the raw stream, prefixes and all, under a 64 KiB message limit.
pub fn exercise_flight_data(data: &[u8]) {
    use crate::flight_data::{framed, read_all};
    use prost::Message;
    let [piece, mode, rest @ ..] = data else {
        return;
    };
    let piece = usize::from(*piece % 64) + 1;
    if mode % 2 == 0 {
        let read = read_all(&framed(rest), piece, 1 << 20);
        assert_eq!(read.len(), 1, "one message read as {} results", read.len());
        if let Ok(ours) = &read[0]
            && let Ok(theirs) = arrow_flight::FlightData::decode(rest)
        {
            assert_eq!(ours, &theirs);
        }
    } else {
        let _ = read_all(rest, piece, 1 << 16);
    }
}

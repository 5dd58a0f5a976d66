//! SQL split into tokens by DuckDB's own tokenizer (C API v2), for the few
//! places that must recognise a statement's exact shape before running it.
//!
//! The tokenizer knows DuckDB's keywords, quoting rules, dollar strings and
//! comments, so a caller matching token classes never re-implements SQL lexing.

use super::arrow_result::{V2Error, V2Str, check};
use super::raw::RawConnection;
use mallard_core::{Error, Result};
use std::ffi::c_void;
use std::ptr;

type Handle = *mut c_void;

unsafe extern "C" {
    fn duckdb_v2_tokenize_sql(
        conn: Handle,
        sql: *const V2Str,
        out_iterator: *mut Handle,
        err: *mut Handle,
    ) -> V2Error;
    fn duckdb_v2_token_iterator_next(
        iterator: Handle,
        out_type: *mut u32,
        out_start: *mut u64,
        out_length: *mut u64,
        err: *mut Handle,
    ) -> V2Error;
    fn duckdb_v2_token_iterator_ends_unterminated(
        iterator: Handle,
        out_ends_unterminated: *mut bool,
        err: *mut Handle,
    ) -> V2Error;
    fn duckdb_v2_token_iterator_destroy(iterator: *mut Handle) -> V2Error;
}

/// A token's lexical class, as DuckDB names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A keyword of the connection's grammar.
    Keyword,
    /// A bare or double-quoted identifier, quotes included.
    Identifier,
    /// A quoted or dollar-quoted string, delimiters included.
    StringLiteral,
    /// A numeric literal.
    Number,
    /// An operator or punctuation run.
    Operator,
    /// A line or block comment.
    Comment,
    /// A statement-terminating semicolon.
    Terminator,
}

/// One token: its class and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token<'a> {
    /// The token's class.
    pub kind: TokenKind,
    /// The token's bytes of the input.
    pub text: &'a str,
}

/// The tokens of `sql`, comments included; InvalidArgument when the input ends
/// inside an open string, identifier or comment.
pub fn tokenize<'a>(conn: &RawConnection, sql: &'a str) -> Result<Vec<Token<'a>>> {
    let input = V2Str {
        ptr: sql.as_ptr().cast(),
        len: sql.len() as u64,
    };
    let mut iterator: Handle = ptr::null_mut();
    let mut err: Handle = ptr::null_mut();
    // SAFETY: a live connection (a v2 connection extends the v1 one, as
    // `arrow_result` explains) and a borrowed string DuckDB reads during the call.
    let code =
        unsafe { duckdb_v2_tokenize_sql(conn.handle().cast(), &input, &mut iterator, &mut err) };
    check(code, err, "tokenizing")?;
    let outcome = drain(iterator, sql);
    // SAFETY: we own the iterator; the tokens borrow `sql`, not it.
    unsafe { duckdb_v2_token_iterator_destroy(&mut iterator) };
    outcome
}

fn drain(iterator: Handle, sql: &str) -> Result<Vec<Token<'_>>> {
    let mut tokens = Vec::new();
    loop {
        let (mut kind, mut start, mut length) = (0u32, 0u64, 0u64);
        let mut err: Handle = ptr::null_mut();
        // SAFETY: a live iterator.
        let code = unsafe {
            duckdb_v2_token_iterator_next(iterator, &mut kind, &mut start, &mut length, &mut err)
        };
        check(code, err, "tokenizing")?;
        let kind = match kind {
            1 => TokenKind::Keyword,
            2 => TokenKind::Identifier,
            3 => TokenKind::StringLiteral,
            4 => TokenKind::Number,
            5 => TokenKind::Operator,
            6 => TokenKind::Comment,
            7 => TokenKind::Terminator,
            8 => break,
            other => {
                return Err(Error::internal(format!(
                    "DuckDB's tokenizer gave an unknown token class {other}"
                )));
            }
        };
        let (start, end) = (start as usize, (start + length) as usize);
        let text = sql
            .get(start..end)
            .ok_or_else(|| Error::internal("DuckDB's tokenizer gave a token outside the input"))?;
        tokens.push(Token { kind, text });
    }
    let mut unterminated = false;
    let mut err: Handle = ptr::null_mut();
    // SAFETY: a live iterator.
    let code = unsafe {
        duckdb_v2_token_iterator_ends_unterminated(iterator, &mut unterminated, &mut err)
    };
    check(code, err, "tokenizing")?;
    // A line comment that runs to the end of the input is complete SQL.
    let ends_in_line_comment = tokens
        .last()
        .is_some_and(|t| t.kind == TokenKind::Comment && t.text.starts_with("--"));
    if unterminated && !ends_in_line_comment {
        return Err(Error::invalid_argument(
            "the SQL ends inside an open string, identifier or comment",
        ));
    }
    Ok(tokens)
}

/// The value of a plain single-quoted string literal (`'it''s'` is `it's`);
/// `None` for any other literal form (escape strings, dollar quoting).
pub fn plain_string_value(literal: &str) -> Option<String> {
    let inner = literal.strip_prefix('\'')?.strip_suffix('\'')?;
    let value = inner.replace("''", "'");
    // A lone quote inside would mean the token was not one plain literal.
    (value.matches('\'').count() * 2 == inner.matches('\'').count()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::RawDatabase;

    fn kinds(sql: &str) -> Vec<(TokenKind, String)> {
        let db = RawDatabase::open(None, &[]).unwrap();
        let conn = db.connect().unwrap();
        tokenize(&conn, sql)
            .unwrap()
            .into_iter()
            .map(|t| (t.kind, t.text.to_owned()))
            .collect()
    }

    #[test]
    fn duckdb_splits_a_statement_into_classed_tokens() {
        use TokenKind::*;
        let tokens = kinds("SELECT * FROM exchange('a', 'it''s') -- done\n;");
        let expected = [
            (Keyword, "SELECT"),
            (Operator, "*"),
            (Keyword, "FROM"),
            (Identifier, "exchange"),
            (Operator, "("),
            (StringLiteral, "'a'"),
            (Operator, ","),
            (StringLiteral, "'it''s'"),
            (Operator, ")"),
            (Comment, "-- done\n"),
            (Terminator, ";"),
        ];
        let tokens: Vec<(TokenKind, &str)> = tokens.iter().map(|(k, t)| (*k, t.as_str())).collect();
        assert_eq!(tokens, expected);
    }

    #[test]
    fn an_open_string_is_refused() {
        let db = RawDatabase::open(None, &[]).unwrap();
        let conn = db.connect().unwrap();
        for open in ["SELECT 'open", "SELECT \"open", "SELECT 1 /* open"] {
            let err = tokenize(&conn, open).unwrap_err();
            assert_eq!(
                err.kind(),
                mallard_core::ErrorKind::InvalidArgument,
                "{open}"
            );
        }
        let last = tokenize(&conn, "SELECT 1 -- to the end").unwrap();
        assert_eq!(last.last().map(|t| t.kind), Some(TokenKind::Comment));
    }

    #[test]
    fn only_plain_literals_have_a_plain_value() {
        assert_eq!(plain_string_value("'a'").as_deref(), Some("a"));
        assert_eq!(plain_string_value("'it''s'").as_deref(), Some("it's"));
        assert_eq!(plain_string_value("''").as_deref(), Some(""));
        assert_eq!(plain_string_value("E'a\\n'"), None);
        assert_eq!(plain_string_value("$$a$$"), None);
        assert_eq!(plain_string_value("'a'b'"), None);
    }
}

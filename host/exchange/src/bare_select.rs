//! A bare `SELECT * FROM exchange(EXCHANGE, QUERY)` answered straight from the
//! exchange, without DuckDB reading the exchange's output back in.
//!
//! Through DuckDB, every output batch of such a statement is decoded, converted
//! into DuckDB vectors, converted back into Arrow by the outer query and encoded
//! again for the client: about half the server's work for a result that is the
//! exchange's output unchanged. When a statement is exactly that shape, its
//! answer is the exchange's own output messages, sent as they come.
//!
//! The shape is established by DuckDB, never guessed from text alone:
//! - DuckDB's tokenizer must give exactly `SELECT * FROM exchange ( 'E' , 'Q' )`
//!   with an optional `;` (comments aside; plain quoted literals only);
//! - preparing the statement for the caller (which judges it under their policy,
//!   as every query is) must bind the server's `exchange` function, and only it,
//!   with exactly those two arguments and no `params` (so a macro or another
//!   function that DuckDB resolved instead is never bypassed);
//! - the exchange's output must have the columns DuckDB declares for the
//!   statement (names and types; nothing DuckDB says is non-null may be nullable
//!   in the output). The client gets DuckDB's schema, so it sees the same result
//!   schema whichever path answers.
//!
//! Anything else goes through DuckDB as before. The exchange runs as the
//! caller with the same slots, quotas, namespaces and receipts as through
//! DuckDB: it is started by the same [`Bound::start`] the table function uses.

use super::output::Output;
use super::sql::{self, Bound};
use crate::Exchanges;
use arrow::datatypes::{Schema, SchemaRef};
use futures::{Stream, StreamExt};
use mallard_access::Principal;
use mallard_core::{Error, Result};
use mallard_db::raw::{Interrupt, RawConnection};
use mallard_db::statements::{self, StatementPolicy};
use mallard_db::table_function::same_columns;
use mallard_db::tokens::{self, Token, TokenKind};
use mallard_protocol::Receipt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A bare select being answered from its exchange.
pub struct BareSelect {
    /// The result schema DuckDB declares for the statement.
    pub schema: SchemaRef,
    /// The exchange's output: data messages, then [`Output::Done`] or an error.
    /// Dropping it cancels the exchange.
    pub output: OutputStream,
    /// Interrupts the exchange's inner query (and so the answer).
    pub interrupt: Arc<Interrupt>,
}

/// Starts `sql` as a bare select for `principal` if it is one (see the module
/// docs); `None` when it must go through DuckDB. An error is the statement's
/// own: it failed to prepare under `policy`, or its exchange failed to start.
pub async fn start(
    exchanges: &Arc<Exchanges>,
    principal: &Principal,
    sql: &str,
    policy: Arc<dyn StatementPolicy>,
) -> Result<Option<BareSelect>> {
    let receipts = Arc::new(Mutex::new(Vec::<Receipt>::new()));
    let (caller, witness) = sql::witnessing_caller(exchanges, principal, receipts);
    let (exchanges_for_check, sql_owned, caller_for_check) =
        (exchanges.clone(), sql.to_owned(), caller.clone());
    let checked = tokio::task::spawn_blocking(move || {
        recognise(
            &exchanges_for_check,
            caller_for_check,
            &witness,
            &sql_owned,
            &*policy,
        )
    })
    .await
    .map_err(|_| Error::internal("the bare-select check panicked"))??;
    let Some((schema, bound)) = checked else {
        return Ok(None);
    };
    let (exchange, interrupt) = bound.start(&caller, exchanges).await?;
    let timeout = exchanges.db.options().query_timeout;
    Ok(Some(BareSelect {
        schema,
        output: within_query_timeout(exchange.output, timeout),
        interrupt,
    }))
}

type OutputStream = Pin<Box<dyn Stream<Item = std::result::Result<Output, tonic::Status>> + Send>>;

/// `output`, ended with DeadlineExceeded (and dropped, which cancels the
/// exchange) once `timeout` has passed: the whole statement answers within the
/// server's query timeout, as it would through DuckDB.
fn within_query_timeout(output: OutputStream, timeout: Duration) -> OutputStream {
    let deadline = Box::pin(tokio::time::sleep(timeout));
    futures::stream::unfold(Some((output, deadline)), move |state| async move {
        let (mut output, mut deadline) = state?;
        tokio::select! {
            item = output.next() => item.map(|item| (item, Some((output, deadline)))),
            () = &mut deadline => {
                let status = tonic::Status::from(Error::deadline_exceeded(format!(
                    "query exceeded the server's query timeout of {timeout:?}"
                )));
                Some((Err(status), None))
            }
        }
    })
    .boxed()
}

/// DuckDB's schema for `sql` and the one call it bound, when `sql` is a bare select.
fn recognise(
    exchanges: &Exchanges,
    caller: sql::SqlCaller,
    witness: &Mutex<Vec<Bound>>,
    sql: &str,
    policy: &dyn StatementPolicy,
) -> Result<Option<(SchemaRef, Bound)>> {
    let connection = exchanges.db.connect_raw()?;
    let Some((descriptor, query)) = bare_arguments(&connection, sql) else {
        return Ok(None);
    };
    let scope = exchanges.db.scopes.enter(connection.id(), Arc::new(caller));
    let schema = statements::result_schema(&connection, sql, policy)?;
    drop(scope);
    let bound = std::mem::take(&mut *witness.lock().unwrap_or_else(|p| p.into_inner()));
    let Some(first) = bound.first() else {
        return Ok(None);
    };
    let only_this_call = bound
        .iter()
        .all(|b| b.descriptor == descriptor && b.query == query && !b.had_params);
    if !only_this_call || !answers_as(&first.output_schema, &schema) {
        return Ok(None);
    }
    Ok(Some((schema, first.clone())))
}

/// The two arguments of `SELECT * FROM exchange('E', 'Q') [;]`, by DuckDB's
/// tokens; `None` for any other statement.
fn bare_arguments(connection: &RawConnection, sql: &str) -> Option<(String, String)> {
    let tokens = tokens::tokenize(connection, sql).ok()?;
    let tokens: Vec<&Token> = tokens
        .iter()
        .filter(|t| t.kind != TokenKind::Comment)
        .collect();
    let body = match tokens.split_last() {
        Some((last, body)) if last.kind == TokenKind::Terminator => body,
        _ => &tokens[..],
    };
    let is = |t: &Token, kind: TokenKind, text: &str| {
        t.kind == kind && t.text.eq_ignore_ascii_case(text)
    };
    match body {
        [
            select,
            star,
            from,
            function,
            open,
            descriptor,
            comma,
            query,
            close,
        ] if is(select, TokenKind::Keyword, "select")
            && is(star, TokenKind::Operator, "*")
            && is(from, TokenKind::Keyword, "from")
            && is(function, TokenKind::Identifier, sql::FUNCTION)
            && is(open, TokenKind::Operator, "(")
            && descriptor.kind == TokenKind::StringLiteral
            && is(comma, TokenKind::Operator, ",")
            && query.kind == TokenKind::StringLiteral
            && is(close, TokenKind::Operator, ")") =>
        {
            Some((
                tokens::plain_string_value(descriptor.text)?,
                tokens::plain_string_value(query.text)?,
            ))
        }
        _ => None,
    }
}

/// Whether the exchange's `output` can be sent as a result DuckDB declares as
/// `declared`: the same columns, and no column DuckDB calls non-null nullable.
fn answers_as(output: &Schema, declared: &Schema) -> bool {
    same_columns(output, declared)
        && output
            .fields()
            .iter()
            .zip(declared.fields())
            .all(|(o, d)| d.is_nullable() || !o.is_nullable())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field};
    use mallard_db::raw::RawDatabase;

    fn arguments(sql: &str) -> Option<(String, String)> {
        let db = RawDatabase::open(None, &[]).unwrap();
        bare_arguments(&db.connect().unwrap(), sql)
    }

    #[test]
    fn only_the_bare_shape_is_recognised() {
        let expected = Some(("add_processed".to_owned(), "SELECT 'x' FROM t".to_owned()));
        assert_eq!(
            arguments("SELECT * FROM exchange('add_processed', 'SELECT ''x'' FROM t')"),
            expected
        );
        assert_eq!(
            arguments("select *\n from EXCHANGE ( 'add_processed' ,'SELECT ''x'' FROM t' ) ; "),
            expected
        );
        assert_eq!(
            arguments(
                "/* hi */ SELECT * FROM exchange('add_processed', 'SELECT ''x'' FROM t') -- x"
            ),
            expected
        );
        for other in [
            "SELECT * FROM exchange('a', 'q') WHERE x > 1",
            "SELECT * FROM exchange('a', 'q') LIMIT 1",
            "SELECT * FROM exchange('a', 'q') ORDER BY 1",
            "SELECT x FROM exchange('a', 'q')",
            "SELECT DISTINCT * FROM exchange('a', 'q')",
            "SELECT * EXCLUDE (x) FROM exchange('a', 'q')",
            "SELECT * FROM exchange('a', 'q', params := map{'k': 'v'})",
            "SELECT * FROM main.exchange('a', 'q')",
            "SELECT * FROM \"exchange\"('a', 'q')",
            "SELECT * FROM exchange('a', 'q') AS e",
            "SELECT * FROM exchange('a', 'q'), t",
            "SELECT * FROM exchange(E'a', 'q')",
            "SELECT * FROM exchange($$a$$, 'q')",
            "SELECT * FROM exchange('a' || 'b', 'q')",
            "SELECT * FROM exchange('a', 'q'); SELECT 1",
            "WITH t AS (SELECT 1) SELECT * FROM exchange('a', 'q')",
            "SELECT * FROM exchange('a', 'q') UNION ALL SELECT * FROM exchange('a', 'q')",
            "SELECT * FROM exchange('a', 'q",
        ] {
            assert_eq!(arguments(other), None, "{other}");
        }
    }

    #[test]
    fn the_output_must_have_the_declared_columns() {
        let schema = |nullable: bool, data_type: DataType| {
            Schema::new(vec![Field::new("x", data_type, nullable)])
        };
        let declared = schema(true, DataType::Int64);
        assert!(answers_as(&schema(false, DataType::Int64), &declared));
        assert!(answers_as(&schema(true, DataType::Int64), &declared));
        assert!(!answers_as(&schema(true, DataType::Int32), &declared));
        assert!(!answers_as(
            &schema(true, DataType::Int64),
            &schema(false, DataType::Int64)
        ));
        let renamed = Schema::new(vec![Field::new("y", DataType::Int64, true)]);
        assert!(!answers_as(&renamed, &declared));
    }
}

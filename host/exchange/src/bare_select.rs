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
use crate::{Exchanges, Outgoing};
use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::datatypes::{Schema, SchemaRef};
use arrow_flight::FlightData;
use futures::{Stream, StreamExt};
use mallard_access::Principal;
use mallard_core::{Error, Result};
use mallard_db::raw::{Interrupt, RawConnection};
use mallard_db::statements::{self, StatementPolicy};
use mallard_db::table_function::same_columns;
use mallard_db::tokens::{self, Token, TokenKind};
use mallard_exchanger::ipc::{Message, MessageDecoder, MessageEncoder, has_dictionary};
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
    /// Ends the answer with Cancelled (and cancels the exchange).
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
    max_message_bytes: usize,
) -> Result<Option<BareSelect>> {
    // Most statements never name the function: they skip the check (and the
    // connection it needs) at once. Naming it proves nothing; DuckDB decides.
    if !contains_ignoring_ascii_case(sql, sql::FUNCTION) {
        return Ok(None);
    }
    let (caller, witness) = sql::witnessing_caller(exchanges, principal);
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
    let exchange = bound.start(&caller, exchanges).await?;
    let timeout = exchanges.db.options().query_timeout;
    let interrupt = Arc::new(Interrupt::detached());
    let mut splitter = Splitter::new(exchange.schema.clone(), max_message_bytes);
    let output = bounded(exchange.output, timeout, interrupt.watch())
        .flat_map(move |item| futures::stream::iter(splitter.fit(item)))
        .boxed();
    Ok(Some(BareSelect {
        schema,
        output,
        interrupt,
    }))
}

type OutputStream = Pin<Box<dyn Stream<Item = std::result::Result<Output, tonic::Status>> + Send>>;

/// Splits output messages larger than a response may carry into slices of
/// rows that fit, as the encoder of any other query result does; the rest pass
/// through untouched.
struct Splitter {
    schema: SchemaRef,
    max_message_bytes: usize,
}

impl Splitter {
    fn new(schema: SchemaRef, max_message_bytes: usize) -> Self {
        Self {
            schema,
            max_message_bytes,
        }
    }

    /// `item`, as messages of at most the limit (a single row larger than the
    /// limit stays one message, as it would through DuckDB).
    fn fit(
        &mut self,
        item: std::result::Result<Output, tonic::Status>,
    ) -> Vec<std::result::Result<Output, tonic::Status>> {
        match item {
            Ok(Output::Data(data)) if data.ipc_len() > self.max_message_bytes => {
                match self.split(data.into_flight_data()) {
                    Ok(pieces) => pieces.into_iter().map(|d| Ok(Output::Data(d))).collect(),
                    Err(e) => vec![Err(tonic::Status::from(e))],
                }
            }
            other => vec![other],
        }
    }

    fn split(&self, data: FlightData) -> Result<Vec<Outgoing>> {
        // SAFETY: every message of an exchange's output was encoded by this
        // server from arrays it validated or built (see `sql::BoundExchange`).
        let mut decoder = unsafe { MessageDecoder::new_unvalidated(self.schema.clone()) };
        let batch = decoder
            .decode(&data.data_header, Buffer::from(data.data_body.clone()))
            .map_err(|e| Error::internal(format!("exchange output: {e}")))?
            .ok_or_else(|| Error::internal("a dictionary in a bare select's output"))?;
        let size = data.data_header.len() + data.data_body.len();
        let rows = batch.num_rows();
        // Proportional, with room for each piece's header and padding.
        let per_piece = (rows * self.max_message_bytes / size * 15 / 16).max(1);
        let mut encoder = MessageEncoder::new(self.schema.clone());
        let mut messages = Vec::new();
        for offset in (0..rows).step_by(per_piece) {
            let slice = batch.slice(offset, per_piece.min(rows - offset));
            self.encode_within(&mut encoder, &slice, &mut messages)?;
        }
        Ok(messages.into_iter().map(crate::outgoing).collect())
    }

    /// Appends `batch` as messages within the limit, halving a piece that
    /// still encodes too large (down to one row).
    fn encode_within(
        &self,
        encoder: &mut MessageEncoder,
        batch: &RecordBatch,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        let mut encoded = Vec::new();
        encoder
            .encode(batch, &mut encoded)
            .map_err(|e| Error::internal(format!("exchange output: {e}")))?;
        let size: usize = encoded.iter().map(|m| m.header.len() + m.body.len()).sum();
        let rows = batch.num_rows();
        if size <= self.max_message_bytes || rows <= 1 {
            out.extend(encoded);
            return Ok(());
        }
        let half = rows / 2;
        self.encode_within(encoder, &batch.slice(0, half), out)?;
        self.encode_within(encoder, &batch.slice(half, rows - half), out)
    }
}

/// `output`, ended with DeadlineExceeded once `timeout` has passed (the whole
/// statement answers within the server's query timeout, as it would through
/// DuckDB), or with Cancelled once `interrupted` turns true (a client's
/// CancelFlightInfo); the exchange is dropped, so cancelled, either way.
fn bounded(
    output: OutputStream,
    timeout: Duration,
    interrupted: tokio::sync::watch::Receiver<bool>,
) -> OutputStream {
    let deadline = Box::pin(tokio::time::sleep(timeout));
    let state = Some((output, deadline, interrupted));
    futures::stream::unfold(state, move |state| async move {
        let (mut output, mut deadline, mut interrupted) = state?;
        let ended = tokio::select! {
            item = output.next() => Ok(item),
            () = &mut deadline => Err(Error::deadline_exceeded(format!(
                "query exceeded the server's query timeout of {timeout:?}"
            ))),
            // A dropped interrupt (no one may cancel) disables this branch.
            Ok(_) = interrupted.wait_for(|fired| *fired) => {
                Err(Error::cancelled("the query was cancelled"))
            }
        };
        match ended {
            Ok(item) => item.map(|item| (item, Some((output, deadline, interrupted)))),
            Err(e) => Some((Err(tonic::Status::from(e)), None)),
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

/// Whether `text` contains `word`, ASCII letters compared without case.
fn contains_ignoring_ascii_case(text: &str, word: &str) -> bool {
    text.as_bytes()
        .windows(word.len())
        .any(|w| w.eq_ignore_ascii_case(word.as_bytes()))
}

/// Whether the exchange's `output` can be sent as a result DuckDB declares as
/// `declared`: the same columns, none dictionary-encoded (their dictionaries
/// would need the messages to be split apart), and no column DuckDB calls
/// non-null nullable.
fn answers_as(output: &Schema, declared: &Schema) -> bool {
    same_columns(output, declared)
        && !output
            .fields()
            .iter()
            .any(|f| has_dictionary(f.data_type()))
        && output
            .fields()
            .iter()
            .zip(declared.fields())
            .all(|(o, d)| d.is_nullable() || !o.is_nullable())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type};
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
    fn only_statements_naming_the_function_are_checked() {
        assert!(contains_ignoring_ascii_case(
            "select * from EXCHANGE(",
            "exchange"
        ));
        assert!(contains_ignoring_ascii_case("exchange", "exchange"));
        assert!(!contains_ignoring_ascii_case(
            "SELECT * FROM flights",
            "exchange"
        ));
        assert!(!contains_ignoring_ascii_case("exchang", "exchange"));
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
        let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let listed = DataType::List(Arc::new(Field::new("item", dictionary.clone(), true)));
        assert!(!answers_as(
            &schema(true, dictionary.clone()),
            &schema(true, dictionary)
        ));
        assert!(!answers_as(
            &schema(true, listed.clone()),
            &schema(true, listed)
        ));
    }

    /// `rows` rows of one Int64 column, as one output message.
    fn message(rows: i64) -> (SchemaRef, Outgoing) {
        let batch = RecordBatch::try_from_iter([(
            "x",
            Arc::new(Int64Array::from_iter_values(0..rows)) as arrow::array::ArrayRef,
        )])
        .unwrap();
        let mut encoder = MessageEncoder::new(batch.schema());
        let mut messages = Vec::new();
        encoder.encode(&batch, &mut messages).unwrap();
        (batch.schema(), crate::outgoing(messages.pop().unwrap()))
    }

    fn sizes_and_values(schema: &SchemaRef, pieces: &[FlightData]) -> (Vec<usize>, Vec<i64>) {
        let mut decoder = MessageDecoder::new(schema.clone());
        let mut values = Vec::new();
        for piece in pieces {
            let batch = decoder
                .decode(&piece.data_header, Buffer::from(piece.data_body.clone()))
                .unwrap()
                .unwrap();
            values.extend(batch.column(0).as_primitive::<Int64Type>().values().iter());
        }
        let sizes = pieces
            .iter()
            .map(|p| p.data_header.len() + p.data_body.len())
            .collect();
        (sizes, values)
    }

    #[test]
    fn messages_over_the_limit_are_split_into_rows_that_fit() {
        let (schema, data) = message(100_000);
        let size = data.ipc_len();
        // At the limit: untouched.
        let mut at = Splitter::new(schema.clone(), size);
        let same = at.fit(Ok(Output::Data(data.clone())));
        assert!(matches!(&same[..], [Ok(Output::Data(d))] if d.body == data.body));
        // One byte under: split, every piece within the limit, every row kept in order.
        for limit in [size - 1, size / 3, 64 << 10] {
            let mut under = Splitter::new(schema.clone(), limit);
            let pieces: Vec<FlightData> = under
                .fit(Ok(Output::Data(data.clone())))
                .into_iter()
                .map(|item| match item {
                    Ok(Output::Data(d)) => d.into_flight_data(),
                    _ => panic!("not data"),
                })
                .collect();
            assert!(pieces.len() > 1, "{limit}");
            let (sizes, values) = sizes_and_values(&schema, &pieces);
            assert!(sizes.iter().all(|s| *s <= limit), "{limit}: {sizes:?}");
            assert_eq!(values, (0..100_000).collect::<Vec<i64>>());
        }
        // A limit below one row: one row per message, never an empty one.
        let (schema, small) = message(3);
        let pieces = Splitter::new(schema.clone(), 1).fit(Ok(Output::Data(small)));
        assert_eq!(pieces.len(), 3);
    }
}

//! Statement tickets: what `GetFlightInfo` of a statement hands the client to
//! fetch with, and how a `CancelFlightInfo` finds the statement again.

use arrow::array::RecordBatch;
use arrow_flight::FlightInfo;
use arrow_flight::sql::{Command, ProstMessageExt, TicketStatementQuery};
use mallard_core::{Error, Result};
use prost::Message;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What a statement ticket carries: the SQL (judged again when it runs, with
/// the caller's rights, so a forged ticket gains nothing), its transaction, and
/// an id to cancel it by; or, for a statement that changes something (run when
/// its `GetFlightInfo` came, so a client that never fetches still gets its
/// DDL done before the call returns), the rows it changed.
#[derive(Serialize, Deserialize, Default)]
pub(super) struct StatementTicket {
    /// The statement's SQL.
    #[serde(default)]
    pub sql: String,
    /// The transaction it runs in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<String>,
    /// The id a `CancelFlightInfo` names it by.
    #[serde(default)]
    pub id: String,
    /// For a statement that already ran: the rows it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<u64>,
}

impl StatementTicket {
    /// The ticket's handle bytes, read back; InvalidArgument if they are not one.
    pub fn decode(handle: &[u8]) -> Result<Self> {
        serde_json::from_slice(handle)
            .map_err(|e| Error::invalid_argument(format!("malformed statement ticket: {e}")))
    }

    /// The ticket bytes: a `TicketStatementQuery` around this, as JSON.
    pub fn ticket(&self) -> Vec<u8> {
        TicketStatementQuery {
            statement_handle: serde_json::to_vec(self).expect("ticket serialises").into(),
        }
        .as_any()
        .encode_to_vec()
    }
}

/// The one-row answer of a statement that changed something: DuckDB's `Count`.
pub(super) fn changed_batch(rows: u64) -> Result<RecordBatch> {
    let count = i64::try_from(rows).unwrap_or(i64::MAX);
    Ok(RecordBatch::try_from_iter([(
        "Count",
        Arc::new(arrow::array::Int64Array::from(vec![count])) as arrow::array::ArrayRef,
    )])?)
}

/// The ids of the statements `info`'s tickets name (those that are statement
/// tickets at all; anything else in it is ignored).
pub(super) fn statement_ids(info: Option<&FlightInfo>) -> Vec<String> {
    info.into_iter()
        .flat_map(|i| i.endpoint.iter())
        .filter_map(|e| e.ticket.as_ref())
        .filter_map(|t| match super::command(&t.ticket) {
            Some(Ok(Command::TicketStatementQuery(q))) => {
                serde_json::from_slice::<StatementTicket>(&q.statement_handle).ok()
            }
            _ => None,
        })
        .map(|t| t.id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::command;
    use super::*;
    use arrow_flight::{FlightEndpoint, Ticket};

    fn round_trip(ticket: &StatementTicket) -> StatementTicket {
        match command(&ticket.ticket()) {
            Some(Ok(Command::TicketStatementQuery(t))) => {
                StatementTicket::decode(&t.statement_handle).unwrap()
            }
            _ => panic!("a statement ticket decodes as TicketStatementQuery"),
        }
    }

    #[test]
    fn statement_tickets_round_trip_through_the_command_decoder() {
        let query = StatementTicket {
            sql: "SELECT 1".into(),
            transaction: Some("ab12".into()),
            id: "0f".repeat(16),
            changed: None,
        };
        let back = round_trip(&query);
        assert_eq!(
            (back.sql, back.transaction, back.id, back.changed),
            (query.sql, query.transaction, query.id, None)
        );
        let changed = round_trip(&StatementTicket {
            changed: Some(7),
            ..StatementTicket::default()
        });
        assert_eq!((changed.sql.as_str(), changed.changed), ("", Some(7)));
    }

    #[test]
    fn a_malformed_ticket_is_invalid_argument_and_a_forged_one_only_carries_sql() {
        let err = StatementTicket::decode(b"{not json").err().unwrap();
        assert_eq!(err.kind(), mallard_core::ErrorKind::InvalidArgument);
        // A hand-made ticket is just SQL: it is judged with the caller's rights when it runs.
        let forged = StatementTicket::decode(br#"{"sql": "DROP TABLE t", "admin": true}"#).unwrap();
        assert_eq!(forged.sql, "DROP TABLE t");
        assert!(forged.transaction.is_none() && forged.changed.is_none());
    }

    #[test]
    fn cancel_finds_only_statement_tickets_ids() {
        let query = StatementTicket {
            sql: "SELECT 1".into(),
            id: "42".into(),
            ..StatementTicket::default()
        };
        let info = FlightInfo::new()
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(query.ticket())))
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new("SELECT 2")))
            .with_endpoint(FlightEndpoint::new());
        assert_eq!(statement_ids(Some(&info)), vec!["42".to_string()]);
        assert!(statement_ids(None).is_empty());
    }

    #[test]
    fn a_changed_count_beyond_i64_saturates() {
        let batch = changed_batch(u64::MAX).unwrap();
        let count = batch
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>();
        assert_eq!(count.unwrap().value(0), i64::MAX);
        assert_eq!(batch.schema().field(0).name(), "Count");
    }
}

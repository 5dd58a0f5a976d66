//! `do_put` in two phases, so a push split across several nodes commits on all
//! of them or on none.
//!
//! The pusher marks its first message (`app_metadata` `{"mallard":
//! "two_phase"}`), sends its rows, then `{"mallard": "prepare"}`: the target
//! inserts every row inside its transaction and answers `{"prepared": rows}`
//! without committing. Once every target has answered, the pusher sends
//! `{"mallard": "commit"}` to each, and each commits and answers `{"rows":
//! rows}`. Anything else (a stream that ends or fails, a client that vanishes,
//! no message within the stall timeout, any other message) rolls the target
//! back. What remains is the window between two targets' COMMITs: a target that
//! dies there is named in the push's error.

use crate::auth::Principal;
use crate::flight::inbound::next_within;
use crate::flight::incoming::Incoming;
use arrow_flight::{FlightData, PutResult};
use futures::StreamExt;
use futures::stream::BoxStream;
use mallard_core::{Error, Result};
use mallard_db::ingest::Ingest;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::Status;

/// A control message of the two-phase put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// On the first message: this put waits for `Commit`.
    TwoPhase,
    /// All rows are sent: insert them and say how many, without committing.
    Prepare,
    /// Every target prepared: commit.
    Commit,
}

impl Control {
    fn name(self) -> &'static str {
        match self {
            Self::TwoPhase => "two_phase",
            Self::Prepare => "prepare",
            Self::Commit => "commit",
        }
    }

    /// The message that carries this control word.
    pub fn message(self) -> FlightData {
        FlightData {
            app_metadata: serde_json::json!({ "mallard": self.name() })
                .to_string()
                .into(),
            ..FlightData::default()
        }
    }

    /// The control word `message` carries, if any.
    pub fn of(message: &FlightData) -> Option<Self> {
        if message.app_metadata.is_empty() || !message.data_header.is_empty() {
            return None;
        }
        let value: serde_json::Value = serde_json::from_slice(&message.app_metadata).ok()?;
        match value.get("mallard")?.as_str()? {
            "two_phase" => Some(Self::TwoPhase),
            "prepare" => Some(Self::Prepare),
            "commit" => Some(Self::Commit),
            _ => None,
        }
    }

    /// Whether a put's first message asks for two phases (it may also carry
    /// the schema, so only its metadata is read).
    pub fn asks_two_phase(first: &FlightData) -> bool {
        serde_json::from_slice::<serde_json::Value>(&first.app_metadata)
            .ok()
            .and_then(|v| v.get("mallard")?.as_str().map(|s| s == "two_phase"))
            .unwrap_or(false)
    }
}

fn put_result(body: serde_json::Value) -> PutResult {
    PutResult {
        app_metadata: body.to_string().into(),
    }
}

/// Serves the rest of a two-phase put into `ingest`: the answer streams while
/// the client still sends, and dropping it (the client gone) rolls back.
/// `held` (the caller's put slot) lives as long as the put.
pub fn serve(
    principal: Principal,
    mut ingest: Ingest,
    mut incoming: Incoming,
    idle: Duration,
    held: impl Send + 'static,
) -> BoxStream<'static, Result<PutResult, Status>> {
    let (tx, rx) = mpsc::channel(2);
    let task = tokio::spawn(async move {
        let _held = held;
        let phases = async {
            loop {
                let message = next_within(&mut incoming, idle, "do_put").await?;
                match message {
                    Some(m) if Control::of(&m) == Some(Control::Prepare) => break,
                    Some(m) if !m.data_header.is_empty() => {
                        ingest.append_message(m.data_header, m.data_body).await?;
                    }
                    Some(m) if Control::of(&m).is_some() => {
                        return Err(Error::invalid_argument(
                            "a two-phase put's rows end with `prepare` before anything else",
                        ));
                    }
                    Some(_) => {}
                    None => {
                        return Err(Error::cancelled(
                            "the two-phase put ended before `prepare`; nothing was written",
                        ));
                    }
                }
            }
            let rows = ingest.prepare().await?;
            if tx
                .send(Ok(put_result(serde_json::json!({ "prepared": rows }))))
                .await
                .is_err()
            {
                return Err(Error::cancelled("the pusher went away after `prepare`"));
            }
            match next_within(&mut incoming, idle, "do_put").await? {
                Some(m) if Control::of(&m) == Some(Control::Commit) => {}
                _ => {
                    return Err(Error::aborted(
                        "the two-phase put was not committed; nothing was written",
                    ));
                }
            }
            ingest.commit_prepared().await
        };
        let answer = match phases.await {
            Ok(rows) => {
                tracing::debug!(user = ?principal.user, rows, "two-phase put committed");
                Ok(put_result(serde_json::json!({ "rows": rows })))
            }
            Err(e) => Err(Status::from(e)),
        };
        let _ = tx.send(answer).await;
    });
    let abort_on_drop = AbortOnDrop(task);
    tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(move |item| {
            let _keep = &abort_on_drop;
            item
        })
        .boxed()
}

/// Aborts the put's task (rolling it back) when its answer stream is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_words_round_trip_and_nothing_else_reads_as_one() {
        for control in [Control::TwoPhase, Control::Prepare, Control::Commit] {
            assert_eq!(Control::of(&control.message()), Some(control));
        }
        assert!(Control::asks_two_phase(&Control::TwoPhase.message()));
        assert!(!Control::asks_two_phase(&Control::Commit.message()));
        assert!(!Control::asks_two_phase(&FlightData::default()));
        let mut data = Control::Commit.message();
        data.data_header = vec![1].into();
        assert_eq!(
            Control::of(&data),
            None,
            "a data message is never a control word"
        );
        for metadata in [
            &b"{}"[..],
            b"not json",
            br#"{"mallard": "rollback"}"#,
            br#"{"mallard": 1}"#,
        ] {
            let message = FlightData {
                app_metadata: metadata.to_vec().into(),
                ..FlightData::default()
            };
            assert_eq!(Control::of(&message), None);
        }
    }
}

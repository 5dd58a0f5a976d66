//! One stateless stage on several instances, each on its own thread (a *lane*):
//! every dictionary batch goes to every lane (each instance keeps its own
//! dictionaries), record batches go to the lanes in turn, and their output comes
//! back in input order, or as soon as it is ready when the caller allows any order.
//!
//! Only sessions that said they are stateless run here ([`ExchangeSession::stateless`]),
//! and only when their output has no dictionary-encoded field: each lane encodes
//! its own output stream, and two streams' dictionaries cannot be interleaved
//! into one.
//!
//! **Bounds.** One thread per lane; each lane queues at most one job beside the
//! one it runs, and the stage keeps at most [`IN_FLIGHT_PER_LANE`] × lanes input
//! messages in flight, so the results channel never holds more than that either.
//! A lane's panic becomes that job's Internal error, never a hang.

use crate::{ExchangeSession, Outgoing};
use arrow::datatypes::{DataType, Schema};
use arrow::ipc::{MessageHeader, root_as_message};
use arrow_flight::FlightData;
use mallard_core::{Error, Result};
use mallard_sandbox::meter::measure_cpu;
use std::collections::{BTreeMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Input messages in flight per lane: one running, one queued, so a lane never
/// waits for the stage to hand it the next batch.
pub const IN_FLIGHT_PER_LANE: usize = 2;

/// Whether output may leave in any order.
pub use mallard_protocol::exchange::Order;

/// One call's outcome on a lane, with what it cost there.
pub struct Done {
    /// The output messages, or the call's error.
    pub out: Result<Vec<Outgoing>>,
    /// CPU time of the call, on the lane's thread.
    pub cpu: Duration,
    /// Wall time of the call.
    pub wall: Duration,
    /// Whether the call was `finish` (else a pushed message).
    pub finish: bool,
    seq: u64,
}

enum Job {
    Push { seq: u64, message: FlightData },
    Finish { seq: u64 },
}

struct Lane {
    jobs: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<Box<dyn ExchangeSession>>>,
}

/// Tells the lanes to skip what is still queued: the stage is over.
#[derive(Clone, Default)]
struct Stopping(Arc<AtomicBool>);

impl Stopping {
    fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    fn stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A stage's sessions, one per lane, fed and drained in order.
pub struct Lanes {
    lanes: Vec<Lane>,
    /// What the sessions declared (the first's; every one opened alike).
    schema_message: FlightData,
    stopping: Stopping,
    results: Receiver<Done>,
    /// Sequence numbers sent and not yet handed back, oldest first.
    in_flight: VecDeque<u64>,
    /// Results that arrived before an older one (input order only).
    early: BTreeMap<u64, Done>,
    next_seq: u64,
    next_lane: usize,
    order: Order,
}

/// Whether a stream of `session` may run on several instances: the session
/// said it is stateless and its `output` has no dictionary-encoded field.
pub fn may_run_on_lanes(session: &dyn ExchangeSession, output: &Schema) -> bool {
    session.stateless() && !has_dictionaries(output)
}

/// Runs one call, returning its outcome, its CPU time on this thread and its
/// wall time.
pub fn timed(
    call: impl FnOnce() -> Result<Vec<Outgoing>>,
) -> (Result<Vec<Outgoing>>, Duration, Duration) {
    let started = Instant::now();
    let (out, cpu) = measure_cpu(call);
    (out, cpu, started.elapsed())
}

/// Whether `schema` has a dictionary-encoded field at any depth (such output
/// cannot be merged from several lanes).
pub fn has_dictionaries(schema: &Schema) -> bool {
    fn within(t: &DataType) -> bool {
        match t {
            DataType::Dictionary(..) => true,
            DataType::List(f)
            | DataType::LargeList(f)
            | DataType::FixedSizeList(f, _)
            | DataType::ListView(f)
            | DataType::LargeListView(f)
            | DataType::Map(f, _) => within(f.data_type()),
            DataType::Struct(fields) => fields.iter().any(|f| within(f.data_type())),
            DataType::Union(fields, _) => fields.iter().any(|(_, f)| within(f.data_type())),
            DataType::RunEndEncoded(_, values) => within(values.data_type()),
            _ => false,
        }
    }
    schema.fields().iter().any(|f| within(f.data_type()))
}

impl Lanes {
    /// Starts one thread per session (at least two sessions; one needs no lanes).
    pub fn start(
        sessions: Vec<Box<dyn ExchangeSession>>,
        order: Order,
        label: &str,
    ) -> Result<Self> {
        debug_assert!(sessions.len() >= 2, "one session needs no lanes");
        let schema_message = sessions
            .first()
            .map(|s| s.schema_message())
            .unwrap_or_default();
        let (done_tx, results) = std::sync::mpsc::channel();
        let stopping = Stopping::default();
        let mut lanes = Vec::with_capacity(sessions.len());
        for (i, session) in sessions.into_iter().enumerate() {
            let (jobs, inbox) = sync_channel(1);
            let done = done_tx.clone();
            let stop = stopping.clone();
            let thread = std::thread::Builder::new()
                .name(format!("mallard-lane-{i}"))
                .stack_size(mallard_sandbox::limits::GUEST_THREAD_STACK_BYTES)
                .spawn(move || serve(session, inbox, done, stop))
                .map_err(|e| {
                    Error::resource_exhausted(format!(
                        "exchange {label:?}: could not start instance thread {i}: {e}"
                    ))
                })?;
            lanes.push(Lane {
                jobs: Some(jobs),
                thread: Some(thread),
            });
        }
        Ok(Self {
            lanes,
            schema_message,
            stopping,
            results,
            in_flight: VecDeque::new(),
            early: BTreeMap::new(),
            next_seq: 0,
            next_lane: 0,
            order,
        })
    }

    /// The output schema message the sessions declared.
    pub fn schema_message(&self) -> FlightData {
        self.schema_message.clone()
    }

    /// Instances this stage runs on.
    pub fn len(&self) -> usize {
        self.lanes.len()
    }

    /// Whether there are no lanes (never, once started).
    pub fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }

    /// Hands `message` to the lanes and returns every result now ready to go
    /// on, in order. A dictionary batch goes to every lane once all earlier
    /// batches are back, so each instance sees it before the batches that use it.
    pub fn push(&mut self, message: &FlightData) -> Result<Vec<Done>> {
        let is_dictionary = root_as_message(&message.data_header)
            .is_ok_and(|m| m.header_type() == MessageHeader::DictionaryBatch);
        if is_dictionary {
            let mut done = self.drain()?;
            for lane in 0..self.lanes.len() {
                self.send(lane, |seq| Job::Push {
                    seq,
                    message: message.clone(),
                })?;
            }
            done.extend(self.drain()?);
            return Ok(done);
        }
        let mut done = Vec::new();
        while self.in_flight.len() >= IN_FLIGHT_PER_LANE * self.lanes.len() {
            done.push(self.next(true)?.expect("in flight"));
        }
        let lane = self.next_lane;
        self.next_lane = (lane + 1) % self.lanes.len();
        self.send(lane, |seq| Job::Push {
            seq,
            message: message.clone(),
        })?;
        while let Some(ready) = self.next(false)? {
            done.push(ready);
        }
        Ok(done)
    }

    /// End of input: waits for everything in flight, then finishes every lane
    /// in lane order.
    pub fn finish(&mut self) -> Result<Vec<Done>> {
        let mut done = self.drain()?;
        for lane in 0..self.lanes.len() {
            self.send(lane, |seq| Job::Finish { seq })?;
        }
        done.extend(self.drain()?);
        Ok(done)
    }

    /// Stops the lanes and returns their sessions (each lane ends once its
    /// current call does; calls are bounded by the call deadline and the
    /// exchange's cancel flag).
    pub fn close(mut self) -> Vec<Box<dyn ExchangeSession>> {
        self.stop();
        self.lanes
            .iter_mut()
            .filter_map(|lane| lane.thread.take()?.join().ok())
            .collect()
    }

    fn send(&mut self, lane: usize, job: impl FnOnce(u64) -> Job) -> Result<()> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let sent = self.lanes[lane]
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job(seq)).is_ok());
        if !sent {
            return Err(Error::internal(format!("exchange instance {lane} stopped")));
        }
        self.in_flight.push_back(seq);
        Ok(())
    }

    /// Everything in flight, in order, waiting for it: what the stage hands on
    /// before its input goes quiet, so a client that waits for a batch's output
    /// before sending the next is answered.
    pub fn drain(&mut self) -> Result<Vec<Done>> {
        let mut done = Vec::with_capacity(self.in_flight.len());
        while let Some(ready) = self.next(true)? {
            done.push(ready);
        }
        Ok(done)
    }

    /// The next result that may go on: the oldest in flight (input order) or
    /// any (any order); waits for it when `wait`, else only takes what has
    /// arrived. `None` when nothing is in flight or nothing is ready.
    fn next(&mut self, wait: bool) -> Result<Option<Done>> {
        loop {
            let Some(&oldest) = self.in_flight.front() else {
                return Ok(None);
            };
            if let Some(done) = self.early.remove(&oldest) {
                self.in_flight.pop_front();
                return Ok(Some(done));
            }
            let arrived = if wait {
                self.results.recv().ok()
            } else {
                match self.results.try_recv() {
                    Ok(done) => Some(done),
                    Err(std::sync::mpsc::TryRecvError::Empty) => return Ok(None),
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => None,
                }
            };
            let Some(done) = arrived else {
                return Err(Error::internal("every exchange instance stopped"));
            };
            match self.order {
                Order::Input if done.seq != oldest => {
                    self.early.insert(done.seq, done);
                }
                _ => {
                    self.in_flight.retain(|&s| s != done.seq);
                    return Ok(Some(done));
                }
            }
        }
    }
}

impl Lanes {
    /// Closes the job queues: each lane skips what is queued and ends after its
    /// current call.
    fn stop(&mut self) {
        self.stopping.stop();
        for lane in &mut self.lanes {
            lane.jobs.take();
        }
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        // Not joined here: a lane in a guest call ends at the call's deadline or
        // the exchange's cancel flag; `close` joins them.
        self.stop();
    }
}

/// A lane's loop: one job at a time, each answered exactly once (a panic
/// becomes an Internal error), until the job queue closes.
fn serve(
    mut session: Box<dyn ExchangeSession>,
    inbox: Receiver<Job>,
    done: Sender<Done>,
    stopping: Stopping,
) -> Box<dyn ExchangeSession> {
    while let Ok(job) = inbox.recv() {
        if stopping.stopped() {
            break;
        }
        let (seq, finish, (out, cpu, wall)) = match job {
            Job::Push { seq, message } => (
                seq,
                false,
                timed(|| guarded(|| session.push(&message.data_header, &message.data_body))),
            ),
            Job::Finish { seq } => (seq, true, timed(|| guarded(|| session.finish()))),
        };
        let result = Done {
            out,
            cpu,
            wall,
            finish,
            seq,
        };
        if done.send(result).is_err() {
            break;
        }
    }
    session
}

fn guarded(call: impl FnOnce() -> Result<Vec<Outgoing>>) -> Result<Vec<Outgoing>> {
    std::panic::catch_unwind(AssertUnwindSafe(call))
        .unwrap_or_else(|_| Err(Error::internal("an exchange instance panicked")))
}

#[cfg(test)]
mod tests {
    //! The lanes with a test session that sleeps longer on earlier batches, so
    //! later batches finish first.

    use super::*;
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{Field, Schema};
    use bytes::Bytes;
    use mallard_exchanger::ipc::{Message, MessageEncoder};

    /// Returns each input message as it came, after sleeping longer for lower
    /// values of the batch's first row (so lanes finish out of order).
    struct SlowEcho {
        fail_at: Option<i64>,
        panic_at: Option<i64>,
    }

    impl ExchangeSession for SlowEcho {
        fn schema_message(&self) -> FlightData {
            FlightData::default()
        }
        fn push(&mut self, header: &Bytes, body: &Bytes) -> Result<Vec<Outgoing>> {
            let first = first_value(header);
            if Some(first) == self.fail_at {
                return Err(Error::aborted(format!("refused {first}")));
            }
            if Some(first) == self.panic_at {
                panic!("lane test panic");
            }
            std::thread::sleep(Duration::from_millis(((8 - first % 8) * 3) as u64));
            Ok(vec![Outgoing::data(header.clone(), vec![body.clone()])])
        }
        fn finish(&mut self) -> Result<Vec<Outgoing>> {
            Ok(Vec::new())
        }
        fn stateless(&self) -> bool {
            true
        }
    }

    /// Which test batch a message is: batch `i` has `i + 1` rows.
    fn first_value(header: &Bytes) -> i64 {
        crate::message_rows(header) as i64 - 1
    }

    fn messages(n: i64) -> Vec<FlightData> {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let mut encoder = MessageEncoder::new(schema.clone());
        let mut out = Vec::new();
        for i in 0..n {
            let values = Int64Array::from_iter_values(0..=i);
            let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(values)]).unwrap();
            let mut encoded = Vec::new();
            encoder.encode(&batch, &mut encoded).unwrap();
            for Message { header, body } in encoded {
                out.push(FlightData {
                    data_header: header.into(),
                    data_body: body.into(),
                    ..Default::default()
                });
            }
        }
        out
    }

    fn echoes(
        n: usize,
        fail_at: Option<i64>,
        panic_at: Option<i64>,
    ) -> Vec<Box<dyn ExchangeSession>> {
        (0..n)
            .map(|_| Box::new(SlowEcho { fail_at, panic_at }) as Box<dyn ExchangeSession>)
            .collect()
    }

    fn run(lanes: &mut Lanes, input: &[FlightData]) -> Vec<Result<i64>> {
        let mut seen = Vec::new();
        let mut take = |done: Vec<Done>| {
            for d in done {
                match d.out {
                    Ok(out) => {
                        seen.extend(out.iter().map(|m| Ok(first_value(&m.fields.data_header))))
                    }
                    Err(e) => seen.push(Err(e)),
                }
            }
        };
        for m in input {
            take(lanes.push(m).unwrap());
        }
        take(lanes.finish().unwrap());
        seen
    }

    #[test]
    fn input_order_is_kept_though_later_batches_finish_first() {
        let input = messages(40);
        let mut lanes = Lanes::start(echoes(4, None, None), Order::Input, "t").unwrap();
        let seen: Vec<i64> = run(&mut lanes, &input)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(seen, (0..40).collect::<Vec<_>>());
        assert_eq!(lanes.close().len(), 4, "every session comes back");
    }

    #[test]
    fn any_order_delivers_every_batch_once() {
        let input = messages(40);
        let mut lanes = Lanes::start(echoes(4, None, None), Order::Any, "t").unwrap();
        let mut seen: Vec<i64> = run(&mut lanes, &input)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        seen.sort();
        assert_eq!(seen, (0..40).collect::<Vec<_>>());
    }

    #[test]
    fn in_flight_never_passes_its_bound() {
        let input = messages(64);
        let mut lanes = Lanes::start(echoes(3, None, None), Order::Input, "t").unwrap();
        for m in &input {
            lanes.push(m).unwrap();
            assert!(lanes.in_flight.len() <= IN_FLIGHT_PER_LANE * 3);
            assert!(lanes.early.len() < IN_FLIGHT_PER_LANE * 3);
        }
        lanes.finish().unwrap();
        assert!(lanes.in_flight.is_empty() && lanes.early.is_empty());
    }

    #[test]
    fn a_failing_batch_comes_back_in_its_place() {
        let input = messages(16);
        let mut lanes = Lanes::start(echoes(2, Some(5), None), Order::Input, "t").unwrap();
        let seen = run(&mut lanes, &input);
        let first_error = seen.iter().position(Result::is_err).unwrap();
        assert_eq!(first_error, 5, "batches before it come first, in order");
        let message = seen[5].as_ref().unwrap_err().to_string();
        assert!(message.contains("refused 5"), "{message}");
    }

    #[test]
    fn a_panicking_lane_answers_its_job_with_internal_and_nothing_hangs() {
        let input = messages(8);
        let mut lanes = Lanes::start(echoes(2, None, Some(3)), Order::Input, "t").unwrap();
        let seen = run(&mut lanes, &input);
        let error = seen[3].as_ref().unwrap_err();
        assert_eq!(error.kind(), mallard_core::ErrorKind::Internal, "{error}");
        assert_eq!(lanes.close().len(), 2, "the lane survives its job's panic");
    }

    #[test]
    fn dictionaries_anywhere_in_an_output_schema_are_found() {
        let dict = DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8));
        let plain = Schema::new(vec![Field::new("a", DataType::Int64, true)]);
        let top = Schema::new(vec![Field::new("a", dict.clone(), true)]);
        let nested = Schema::new(vec![Field::new(
            "l",
            DataType::List(Arc::new(Field::new("item", dict, true))),
            true,
        )]);
        assert!(!has_dictionaries(&plain));
        assert!(has_dictionaries(&top));
        assert!(has_dictionaries(&nested));
    }
}

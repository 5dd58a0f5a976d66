//! Flight SQL on the seeds' port, driven by arrow-flight's own
//! `FlightSqlServiceClient` against a real server: statements, updates,
//! prepared statements with parameters, bulk ingest in every mode, catalog
//! metadata, transactions, cancellation, and what a hostile client of the
//! lowest role tries (other users' handles, forged tickets, limits).

mod common;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    CommandGetDbSchemas, CommandGetPrimaryKeys, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandStatementIngest, EndTransaction, ProstMessageExt, SqlInfo, TableDefinitionOptions,
    TableExistsOption, TableNotExistOption, TicketStatementQuery,
};
use arrow_flight::{Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus};
use arrow_flight::{FlightInfo, Ticket};
use futures::TryStreamExt;
use mallard::RunningServer;
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;

type Client = FlightSqlServiceClient<Channel>;

async fn sql_client(server: &RunningServer, who: (&str, &str)) -> Client {
    let channel = mallard::transport::connect_with(&server.url(), None)
        .await
        .expect("channel");
    let mut client = FlightSqlServiceClient::new(channel);
    client.handshake(who.0, who.1).await.expect("handshake");
    client
}

fn code(e: FlightError) -> tonic::Code {
    match e {
        FlightError::Tonic(status) => status.code(),
        other => panic!("not a gRPC status: {other}"),
    }
}

async fn fetch(client: &mut Client, info: FlightInfo) -> Result<Vec<RecordBatch>, FlightError> {
    let mut out = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("ticket");
        let stream = client.do_get(ticket).await?;
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        out.extend(batches);
    }
    Ok(out)
}

async fn query(client: &mut Client, sql: &str) -> Result<Vec<RecordBatch>, FlightError> {
    let info = client.execute(sql.to_owned(), None).await?;
    fetch(client, info).await
}

async fn scalar(client: &mut Client, sql: &str) -> i64 {
    let batches = query(client, sql).await.expect(sql);
    let column = arrow::compute::cast(batches[0].column(0), &DataType::Int64).unwrap();
    column.as_primitive::<Int64Type>().value(0)
}

fn ingest_command(
    table: &str,
    missing: TableNotExistOption,
    exists: TableExistsOption,
) -> CommandStatementIngest {
    CommandStatementIngest {
        table_definition_options: Some(TableDefinitionOptions {
            if_not_exist: missing as i32,
            if_exists: exists as i32,
        }),
        table: table.into(),
        schema: None,
        catalog: None,
        temporary: false,
        transaction_id: None,
        options: Default::default(),
    }
}

async fn ingest(
    client: &mut Client,
    command: CommandStatementIngest,
    batches: Vec<RecordBatch>,
) -> Result<i64, FlightError> {
    let stream = futures::stream::iter(batches.into_iter().map(Ok));
    client.execute_ingest(command, stream).await
}

/// Sum of a per-row hash over every column: equal tables, equal checksums.
async fn checksum(client: &mut Client, table: &str) -> (i64, String) {
    let batches = query(
        client,
        &format!("SELECT count(*), sum(hash(t)::HUGEINT)::VARCHAR FROM \"{table}\" t"),
    )
    .await
    .unwrap();
    let count = batches[0].column(0).as_primitive::<Int64Type>().value(0);
    let sum = batches[0].column(1).as_string::<i32>().value(0).to_owned();
    (count, sum)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statements_updates_prepared_and_the_seeds_protocol_share_one_port() {
    let server = common::start_with(common::config_with_accounts()).await;
    let mut admin = sql_client(&server, ("admin", "password123")).await;
    // Statement query.
    assert_eq!(scalar(&mut admin, "SELECT 40 + 2").await, 42);
    // Updates report DuckDB's row counts.
    assert_eq!(
        admin
            .execute_update(
                "CREATE TABLE t (id BIGINT PRIMARY KEY, name VARCHAR)".into(),
                None
            )
            .await
            .unwrap(),
        0
    );
    let inserted = admin
        .execute_update(
            "INSERT INTO t SELECT i, 'n' || i FROM range(100) r(i)".into(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(inserted, 100);
    // Prepared query with one bound row; its schemas come from DuckDB.
    let mut prepared = admin
        .prepare("SELECT count(*) AS n FROM t WHERE id < $1".into(), None)
        .await
        .unwrap();
    assert_eq!(prepared.dataset_schema().unwrap().field(0).name(), "n");
    assert_eq!(prepared.parameter_schema().unwrap().fields().len(), 1);
    let params = RecordBatch::try_from_iter([(
        "$1",
        Arc::new(Int64Array::from(vec![10])) as Arc<dyn Array>,
    )])
    .unwrap();
    prepared.set_parameters(params).unwrap();
    let info = prepared.execute().await.unwrap();
    let batches = fetch(&mut admin, info).await.unwrap();
    assert_eq!(
        batches[0].column(0).as_primitive::<Int64Type>().value(0),
        10
    );
    prepared.close().await.unwrap();
    // Prepared update with many rows: one transaction, summed counts.
    let mut update = admin
        .prepare("INSERT INTO t VALUES ($1, $2)".into(), None)
        .await
        .unwrap();
    let rows = RecordBatch::try_from_iter([
        (
            "id",
            Arc::new(Int64Array::from(vec![1000, 1001, 1002])) as Arc<dyn Array>,
        ),
        (
            "name",
            Arc::new(StringArray::from(vec!["a", "b", "c"])) as Arc<dyn Array>,
        ),
    ])
    .unwrap();
    update.set_parameters(rows).unwrap();
    assert_eq!(update.execute_update().await.unwrap(), 3);
    // A failing row rolls back the rows before it (duplicate key).
    let dup = RecordBatch::try_from_iter([
        (
            "id",
            Arc::new(Int64Array::from(vec![2000, 1000])) as Arc<dyn Array>,
        ),
        (
            "name",
            Arc::new(StringArray::from(vec!["x", "dup"])) as Arc<dyn Array>,
        ),
    ])
    .unwrap();
    update.set_parameters(dup).unwrap();
    assert!(update.execute_update().await.is_err());
    assert_eq!(
        scalar(&mut admin, "SELECT count(*) FROM t WHERE id = 2000").await,
        0
    );
    update.close().await.unwrap();
    // The seeds' protocol on the same port, unchanged.
    let mut seeds = common::client(&server).await;
    assert_eq!(
        common::scalar_i64(&mut seeds, "SELECT count(*) FROM t").await,
        103
    );
    let listed: Vec<String> = seeds
        .list_actions()
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.r#type)
        .collect();
    assert!(listed.contains(&"healthcheck".to_owned()), "{listed:?}");
    assert!(
        listed.contains(&"CreatePreparedStatement".to_owned()),
        "{listed:?}"
    );
    let health = common::action(&mut seeds, "healthcheck", "").await.unwrap();
    assert_eq!(health["live"]["prepared_statements"], 0, "{health}");
    common::assert_idle(&mut seeds).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metadata_answers_from_duckdbs_catalog() {
    let server = common::start().await;
    let mut admin = sql_client(&server, ("admin", "password123")).await;
    admin
        .execute_update(
            "CREATE TABLE parent (id INTEGER PRIMARY KEY, label VARCHAR); \
             CREATE TABLE child (id INTEGER, parent_id INTEGER REFERENCES parent(id)); \
             CREATE VIEW v AS SELECT id FROM parent"
                .into(),
            None,
        )
        .await
        .unwrap();
    let info = admin.get_catalogs().await.unwrap();
    let catalogs = fetch(&mut admin, info).await.unwrap();
    let names: Vec<&str> = catalogs[0]
        .column(0)
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    assert_eq!(names, ["memory"]);
    let info = admin
        .get_db_schemas(CommandGetDbSchemas {
            catalog: Some("memory".into()),
            db_schema_filter_pattern: Some("ma%".into()),
        })
        .await
        .unwrap();
    let schemas = fetch(&mut admin, info).await.unwrap();
    assert_eq!(schemas[0].column(1).as_string::<i32>().value(0), "main");
    assert_eq!(schemas[0].num_rows(), 1);
    let info = admin
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: None,
            table_name_filter_pattern: Some("%".into()),
            table_types: vec![],
            include_schema: true,
        })
        .await
        .unwrap();
    let tables = fetch(&mut admin, info).await.unwrap();
    let batch = &tables[0];
    let table_names: Vec<&str> = batch
        .column(2)
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    assert_eq!(table_names, ["child", "parent", "v"]);
    let kinds: Vec<&str> = batch
        .column(3)
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    assert_eq!(kinds, ["TABLE", "TABLE", "VIEW"]);
    let parent_schema = Schema::try_from(arrow_flight::IpcMessage(
        batch.column(4).as_binary::<i32>().value(1).to_vec().into(),
    ))
    .unwrap();
    assert_eq!(
        parent_schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>(),
        ["id", "label"]
    );
    let info = admin.get_table_types().await.unwrap();
    assert_eq!(fetch(&mut admin, info).await.unwrap()[0].num_rows(), 2);
    let info = admin
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: None,
            db_schema: None,
            table: "parent".into(),
        })
        .await
        .unwrap();
    let keys = fetch(&mut admin, info).await.unwrap();
    assert_eq!(keys[0].num_rows(), 1);
    assert_eq!(keys[0].column(3).as_string::<i32>().value(0), "id");
    let info = admin
        .get_imported_keys(arrow_flight::sql::CommandGetImportedKeys {
            catalog: None,
            db_schema: None,
            table: "child".into(),
        })
        .await
        .unwrap();
    let fks = fetch(&mut admin, info).await.unwrap();
    assert_eq!(fks[0].num_rows(), 1);
    assert_eq!(fks[0].column(2).as_string::<i32>().value(0), "parent");
    assert_eq!(fks[0].column(7).as_string::<i32>().value(0), "parent_id");
    let info = admin
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerTransaction,
        ])
        .await
        .unwrap();
    let sql_info = fetch(&mut admin, info).await.unwrap();
    assert_eq!(sql_info[0].num_rows(), 2);
    let info = admin
        .get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None })
        .await
        .unwrap();
    let types = fetch(&mut admin, info).await.unwrap();
    let type_names: Vec<&str> = types[0]
        .column(0)
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    assert!(
        type_names.contains(&"BIGINT") && type_names.contains(&"VARCHAR"),
        "{type_names:?}"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bulk_ingest_creates_appends_and_replaces_all_or_nothing() {
    use TableExistsOption as E;
    use TableNotExistOption as N;
    let mut config = common::config_with_accounts();
    config.stall_timeout = Duration::from_secs(2);
    let server = common::start_with(config).await;
    let mut admin = sql_client(&server, ("admin", "password123")).await;
    let mut alice = sql_client(&server, common::ALICE).await;
    let flights = common::flights(200_000, 65_536);
    let create = ingest_command("flights", N::Create, E::Fail);
    assert_eq!(
        ingest(&mut alice, create.clone(), flights.clone())
            .await
            .unwrap(),
        200_000
    );
    let once = checksum(&mut admin, "flights").await;
    assert_eq!(once.0, 200_000);
    // Create again: AlreadyExists, table untouched.
    let e = ingest(&mut alice, create, flights.clone())
        .await
        .unwrap_err();
    assert_eq!(code(e), tonic::Code::AlreadyExists);
    assert_eq!(checksum(&mut admin, "flights").await, once);
    // Append doubles every row.
    let append = ingest_command("flights", N::Fail, E::Append);
    assert_eq!(
        ingest(&mut alice, append, flights.clone()).await.unwrap(),
        200_000
    );
    assert_eq!(checksum(&mut admin, "flights").await.0, 400_000);
    // Append to a missing table: NotFound, nothing created.
    let missing = ingest_command("nowhere", N::Fail, E::Append);
    let e = ingest(&mut alice, missing, flights.clone())
        .await
        .unwrap_err();
    assert_eq!(code(e), tonic::Code::NotFound);
    // Replace destroys the old table: a user may not, an admin may.
    let replace = ingest_command("flights", N::Create, E::Replace);
    let e = ingest(&mut alice, replace.clone(), flights.clone())
        .await
        .unwrap_err();
    assert_eq!(code(e), tonic::Code::PermissionDenied);
    assert_eq!(
        ingest(&mut admin, replace, flights.clone()).await.unwrap(),
        200_000
    );
    assert_eq!(checksum(&mut admin, "flights").await, once);
    // A client that vanishes mid-stream writes nothing: the table keeps its rows.
    let (mut feed, batches) =
        futures::channel::mpsc::channel::<Result<RecordBatch, FlightError>>(4);
    let mut vanishing = alice.clone();
    let task = tokio::spawn(async move {
        let append = ingest_command("flights", N::Fail, E::Append);
        vanishing.execute_ingest(append, batches).await
    });
    for batch in flights.iter().take(2) {
        futures::SinkExt::send(&mut feed, Ok(batch.clone()))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Gone without ending its stream: the server stops waiting at the stall
    // timeout and writes nothing.
    task.abort();
    let mut seeds = common::client(&server).await;
    common::assert_idle(&mut seeds).await;
    assert_eq!(checksum(&mut admin, "flights").await, once);
    drop(feed);
    // A reader may not ingest at all.
    let mut rita = sql_client(&server, common::RITA).await;
    let e = ingest(&mut rita, ingest_command("r", N::Create, E::Fail), flights)
        .await
        .unwrap_err();
    assert_eq!(code(e), tonic::Code::PermissionDenied);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactions_commit_roll_back_and_stay_with_their_owner() {
    let server = common::start_with(common::config_with_accounts()).await;
    let mut admin = sql_client(&server, ("admin", "password123")).await;
    admin
        .execute_update("CREATE TABLE ledger (x INTEGER)".into(), None)
        .await
        .unwrap();
    let tx = admin.begin_transaction().await.unwrap();
    let n = admin
        .execute_update(
            "INSERT INTO ledger VALUES (1), (2)".into(),
            Some(tx.clone()),
        )
        .await
        .unwrap();
    assert_eq!(n, 2);
    // Inside, the rows are there; outside, not yet.
    let info = admin
        .execute("SELECT count(*) FROM ledger".into(), Some(tx.clone()))
        .await
        .unwrap();
    let inside = fetch(&mut admin, info).await.unwrap();
    assert_eq!(inside[0].column(0).as_primitive::<Int64Type>().value(0), 2);
    assert_eq!(scalar(&mut admin, "SELECT count(*) FROM ledger").await, 0);
    // Another user cannot use or end it.
    let mut bob = sql_client(&server, common::BOB).await;
    let e = bob
        .execute("SELECT 1".into(), Some(tx.clone()))
        .await
        .unwrap_err();
    assert_eq!(code(e), tonic::Code::NotFound);
    let e = bob
        .end_transaction(tx.clone(), EndTransaction::Commit)
        .await
        .unwrap_err();
    assert_eq!(code(e), tonic::Code::NotFound);
    admin
        .end_transaction(tx.clone(), EndTransaction::Rollback)
        .await
        .unwrap();
    assert_eq!(scalar(&mut admin, "SELECT count(*) FROM ledger").await, 0);
    // Ended means gone.
    let e = admin
        .execute("SELECT 1".into(), Some(tx))
        .await
        .unwrap_err();
    assert_eq!(code(e), tonic::Code::NotFound);
    // Commit keeps the rows.
    let tx = admin.begin_transaction().await.unwrap();
    admin
        .execute_update("INSERT INTO ledger VALUES (7)".into(), Some(tx.clone()))
        .await
        .unwrap();
    admin
        .end_transaction(tx, EndTransaction::Commit)
        .await
        .unwrap();
    assert_eq!(scalar(&mut admin, "SELECT count(*) FROM ledger").await, 1);
    // An ingest inside a transaction is part of it: rolled back, it leaves nothing.
    let tx = admin.begin_transaction().await.unwrap();
    let mut command = ingest_command(
        "ingested",
        TableNotExistOption::Create,
        TableExistsOption::Fail,
    );
    command.transaction_id = Some(tx.clone());
    assert_eq!(
        ingest(&mut admin, command, common::flights(1_000, 500))
            .await
            .unwrap(),
        1_000
    );
    let info = admin
        .execute("SELECT count(*) FROM ingested".into(), Some(tx.clone()))
        .await
        .unwrap();
    let inside = fetch(&mut admin, info).await.unwrap();
    assert_eq!(
        inside[0].column(0).as_primitive::<Int64Type>().value(0),
        1_000
    );
    admin
        .end_transaction(tx, EndTransaction::Rollback)
        .await
        .unwrap();
    let e = query(&mut admin, "SELECT count(*) FROM ingested")
        .await
        .unwrap_err();
    assert_eq!(code(e), tonic::Code::NotFound);
    // A user's transaction is read-only: ingest inside it is refused up front,
    // and the transaction stays usable.
    let mut alice = sql_client(&server, common::ALICE).await;
    let tx = alice.begin_transaction().await.unwrap();
    let mut command = ingest_command(
        "alices",
        TableNotExistOption::Create,
        TableExistsOption::Fail,
    );
    command.transaction_id = Some(tx.clone());
    let e = ingest(&mut alice, command, common::flights(100, 100))
        .await
        .unwrap_err();
    assert_eq!(code(e), tonic::Code::FailedPrecondition);
    alice
        .end_transaction(tx, EndTransaction::Commit)
        .await
        .unwrap();
    // A reader's transaction is read-only and its DDL refused.
    let mut rita = sql_client(&server, common::RITA).await;
    let tx = rita.begin_transaction().await.unwrap();
    let e = rita
        .execute_update("DELETE FROM ledger".into(), Some(tx.clone()))
        .await
        .unwrap_err();
    assert_eq!(code(e), tonic::Code::PermissionDenied);
    rita.end_transaction(tx, EndTransaction::Rollback)
        .await
        .unwrap();
    // At most four open transactions per user.
    let mut open = Vec::new();
    for _ in 0..mallard::flight::sql::TRANSACTION_LIMITS.per_user {
        open.push(bob.begin_transaction().await.unwrap());
    }
    let e = bob.begin_transaction().await.unwrap_err();
    assert_eq!(code(e), tonic::Code::ResourceExhausted);
    for tx in open {
        bob.end_transaction(tx, EndTransaction::Rollback)
            .await
            .unwrap();
    }
    let mut seeds = common::client(&server).await;
    let health = common::action(&mut seeds, "healthcheck", "").await.unwrap();
    assert_eq!(health["live"]["transactions"], 0, "{health}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_cannot_write_through_any_flight_sql_door() {
    let server = common::start_with(common::config_with_accounts()).await;
    let mut admin = sql_client(&server, ("admin", "password123")).await;
    admin
        .execute_update(
            "CREATE TABLE keep (x INTEGER); INSERT INTO keep VALUES (1)".into(),
            None,
        )
        .await
        .unwrap();
    let mut rita = sql_client(&server, common::RITA).await;
    // Statement, update, prepared statement: DDL and DML refused.
    let e = rita
        .execute("DROP TABLE keep".into(), None)
        .await
        .unwrap_err();
    assert_eq!(code(e), tonic::Code::PermissionDenied);
    let e = rita
        .execute_update("DELETE FROM keep".into(), None)
        .await
        .unwrap_err();
    assert_eq!(code(e), tonic::Code::PermissionDenied);
    let e = rita
        .prepare("CREATE TABLE evil (x INTEGER)".into(), None)
        .await
        .err()
        .unwrap();
    assert_eq!(code(e), tonic::Code::PermissionDenied);
    // A forged statement ticket is judged when it runs, with the caller's rights.
    let handle = serde_json::json!({ "sql": "DROP TABLE keep", "id": "x" }).to_string();
    let ticket = TicketStatementQuery {
        statement_handle: handle.into(),
    };
    let forged = Ticket::new(ticket.as_any().encode_to_vec());
    let e = match rita.do_get(forged).await {
        Ok(stream) => stream.try_collect::<Vec<_>>().await.err(),
        Err(e) => Some(e),
    }
    .expect("the forged ticket is refused");
    assert_eq!(code(e), tonic::Code::PermissionDenied);
    // File access through a prepared read is refused too.
    let e = rita
        .prepare("SELECT * FROM read_csv('/etc/passwd')".into(), None)
        .await
        .err()
        .unwrap();
    assert_eq!(code(e), tonic::Code::PermissionDenied);
    // Another user's prepared statement is NotFound.
    let mut alice = sql_client(&server, common::ALICE).await;
    let theirs = alice.prepare("SELECT 1".into(), None).await.unwrap();
    let stolen = arrow_flight::sql::CommandPreparedStatementQuery {
        prepared_statement_handle: theirs_handle(&mut alice).await,
    };
    let Err(e) = rita
        .do_get(Ticket::new(stolen.as_any().encode_to_vec()))
        .await
    else {
        panic!("another user's prepared statement ran");
    };
    assert_eq!(code(e), tonic::Code::NotFound);
    drop(theirs);
    // Prepared statements are bounded per user.
    let mut held = Vec::new();
    for _ in 0..(mallard::flight::sql::PREPARED_LIMITS.per_user - 1) {
        held.push(rita.prepare("SELECT 1".into(), None).await.unwrap());
    }
    held.push(rita.prepare("SELECT 1".into(), None).await.unwrap());
    let e = rita.prepare("SELECT 1".into(), None).await.err().unwrap();
    assert_eq!(code(e), tonic::Code::ResourceExhausted);
    for p in held {
        p.close().await.unwrap();
    }
    assert!(rita.prepare("SELECT 1".into(), None).await.is_ok());
    assert_eq!(scalar(&mut admin, "SELECT count(*) FROM keep").await, 1);
    server.stop().await.unwrap();
}

/// A handle alice holds (through the raw action, to see the bytes).
async fn theirs_handle(client: &mut Client) -> bytes::Bytes {
    let request = arrow_flight::sql::ActionCreatePreparedStatementRequest {
        query: "SELECT 2".into(),
        transaction_id: None,
    };
    let action = Action::new("CreatePreparedStatement", request.as_any().encode_to_vec());
    let mut results = client.do_action(action).await.unwrap();
    let result = results.message().await.unwrap().unwrap();
    let any = arrow_flight::sql::Any::decode(result.body).unwrap();
    let created: arrow_flight::sql::ActionCreatePreparedStatementResult =
        any.unpack().unwrap().unwrap();
    created.prepared_statement_handle
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_running_statement_is_cancelled_by_its_owner_only() {
    let server = common::start_with(common::config_with_accounts()).await;
    let mut alice = sql_client(&server, common::ALICE).await;
    let info = alice
        .execute("SELECT count(*) FROM range(100000000000) a".into(), None)
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut runner = alice.clone();
    let running = tokio::spawn(async move {
        match runner.do_get(ticket).await {
            Ok(stream) => stream
                .try_collect::<Vec<_>>()
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cancel = |client: &mut Client, info: FlightInfo| {
        let mut client = client.clone();
        async move {
            let action = Action::new(
                "CancelFlightInfo",
                CancelFlightInfoRequest::new(info).encode_to_vec(),
            );
            let mut results = client.do_action(action).await.unwrap();
            let body = results.message().await.unwrap().unwrap().body;
            CancelFlightInfoResult::decode(body).unwrap().status
        }
    };
    let mut bob = sql_client(&server, common::BOB).await;
    assert_eq!(
        cancel(&mut bob, info.clone()).await,
        CancelStatus::NotCancellable as i32
    );
    assert_eq!(
        cancel(&mut alice, info).await,
        CancelStatus::Cancelled as i32
    );
    let outcome = common::within(Duration::from_secs(10), running)
        .await
        .unwrap();
    let e = outcome.expect_err("the cancelled statement ends with an error");
    assert!(e.contains("Cancelled") || e.contains("nterrupt"), "{e}");
    let mut seeds = common::client(&server).await;
    common::assert_idle(&mut seeds).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unsupported_and_malformed_commands_get_precise_codes() {
    let server = common::start().await;
    let mut admin = sql_client(&server, ("admin", "password123")).await;
    // Two statements cannot be one prepared statement.
    let e = admin
        .prepare("SELECT 1; SELECT 2".into(), None)
        .await
        .err()
        .unwrap();
    assert_eq!(code(e), tonic::Code::InvalidArgument);
    // Savepoints are not offered.
    let body = arrow_flight::sql::ActionBeginSavepointRequest {
        transaction_id: bytes::Bytes::from_static(b"x"),
        name: "s".into(),
    };
    let e = admin
        .do_action(Action::new("BeginSavepoint", body.as_any().encode_to_vec()))
        .await
        .err()
        .unwrap();
    assert_eq!(code(e), tonic::Code::Unimplemented);
    // Temporary-table ingest is refused before any data is read.
    let mut command = ingest_command("tmp", TableNotExistOption::Create, TableExistsOption::Fail);
    command.temporary = true;
    let e = ingest(&mut admin, command, common::flights(10, 10))
        .await
        .unwrap_err();
    assert_eq!(code(e), tonic::Code::Unimplemented);
    // A prepared query with two parameter rows is ambiguous.
    let mut prepared = admin
        .prepare("SELECT $1::BIGINT".into(), None)
        .await
        .unwrap();
    let two = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("$1", DataType::Int64, false)])),
        vec![Arc::new(Int64Array::from(vec![1, 2]))],
    )
    .unwrap();
    prepared.set_parameters(two).unwrap();
    let info = prepared.execute().await.unwrap();
    let e = fetch(&mut admin, info).await.unwrap_err();
    assert!(e.to_string().contains("one row of parameters"), "{e}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn updates_obey_the_query_timeout() {
    let mut config = common::config_with_accounts();
    config.db.query_timeout = Duration::from_secs(2);
    let server = common::start_with(config).await;
    let mut admin = sql_client(&server, ("admin", "password123")).await;
    let started = std::time::Instant::now();
    let e = admin
        .execute_update(
            "CREATE TABLE slow AS SELECT count(*) AS n FROM range(100000000000)".into(),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(code(e), tonic::Code::DeadlineExceeded);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // The same through a statement query (DDL runs at GetFlightInfo).
    let e = admin
        .execute(
            "CREATE TABLE slow AS SELECT count(*) AS n FROM range(100000000000)".into(),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(code(e), tonic::Code::DeadlineExceeded);
    let e = query(&mut admin, "SELECT * FROM slow").await.unwrap_err();
    assert_eq!(code(e), tonic::Code::NotFound);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flight_sql_clients_call_exchangers_like_any_sql() {
    let server = common::start_with(common::config_with_accounts()).await;
    let mut seeds = common::login(&server, common::ALICE).await;
    common::put(&mut seeds, "flights", common::flights(50_000, 10_000))
        .await
        .unwrap();
    common::upload(&mut seeds, "add_processed").await;
    let mut alice = sql_client(&server, common::ALICE).await;
    let processed = scalar(
        &mut alice,
        "SELECT count(*) FROM exchange('add_processed', 'SELECT * FROM flights') WHERE processed",
    )
    .await;
    assert_eq!(processed, 50_000);
    // Through a prepared statement with a parameter in the outer query too.
    let mut prepared = alice
        .prepare(
            "SELECT count(*) FROM exchange('add_processed', 'SELECT * FROM flights') \
             WHERE processed AND passengers > $1"
                .into(),
            None,
        )
        .await
        .unwrap();
    let params = RecordBatch::try_from_iter([(
        "$1",
        Arc::new(Int64Array::from(vec![100])) as Arc<dyn Array>,
    )])
    .unwrap();
    prepared.set_parameters(params).unwrap();
    let info = prepared.execute().await.unwrap();
    let through = fetch(&mut alice, info).await.unwrap()[0]
        .column(0)
        .as_primitive::<Int64Type>()
        .value(0);
    let plain = scalar(
        &mut alice,
        "SELECT count(*) FROM flights WHERE passengers > 100",
    )
    .await;
    assert_eq!(through, plain);
    // Another user's exchanger is as unknown here as anywhere.
    let mut bob = sql_client(&server, common::BOB).await;
    let e = query(
        &mut bob,
        "SELECT * FROM exchange('alice/add_processed', 'SELECT * FROM flights')",
    )
    .await
    .unwrap_err();
    assert_eq!(code(e), tonic::Code::NotFound);
    common::assert_idle(&mut seeds).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bare_select_streams_what_its_flight_info_promised_and_cancels() {
    let mut config = common::config_with_accounts();
    // Only a cancel can stop the guest below.
    config.limits.call_timeout = Duration::from_secs(60);
    let server = common::start_with(config).await;
    let mut seeds = common::login(&server, common::ALICE).await;
    // (Few rows: the arrow-rs Flight SQL client keeps tonic's 4 MiB message limit.)
    common::put(&mut seeds, "flights", common::flights(30_000, 10_000))
        .await
        .unwrap();
    common::upload(&mut seeds, "add_processed").await;
    common::upload(&mut seeds, "hostile_endless_loop").await;
    let mut alice = sql_client(&server, common::ALICE).await;
    let before = server.state().metrics.bare_selects.get();
    let info = alice
        .execute(
            "SELECT * FROM exchange('add_processed', 'SELECT * FROM flights')".into(),
            None,
        )
        .await
        .unwrap();
    let described = info.clone().try_decode_schema().unwrap();
    let batches = fetch(&mut alice, info).await.unwrap();
    assert_eq!(batches[0].schema().as_ref(), &described);
    assert_eq!(common::rows(&batches), 30_000);
    assert_eq!(server.state().metrics.bare_selects.get(), before + 1);

    // CancelFlightInfo ends a bare select whose guest never returns.
    let info = alice
        .execute(
            "SELECT * FROM exchange('hostile_endless_loop', 'SELECT * FROM flights')".into(),
            None,
        )
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut runner = alice.clone();
    let running = tokio::spawn(async move {
        let stream = runner.do_get(ticket).await.map_err(|e| e.to_string())?;
        stream
            .try_collect::<Vec<_>>()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let action = Action::new(
        "CancelFlightInfo",
        CancelFlightInfoRequest::new(info).encode_to_vec(),
    );
    let mut results = alice.do_action(action).await.unwrap();
    let body = results.message().await.unwrap().unwrap().body;
    assert_eq!(
        CancelFlightInfoResult::decode(body).unwrap().status,
        CancelStatus::Cancelled as i32
    );
    let outcome = common::within(Duration::from_secs(10), running)
        .await
        .unwrap();
    let e = outcome.expect_err("the cancelled statement ends with an error");
    assert!(e.contains("the query was cancelled"), "{e}");
    assert_eq!(server.state().metrics.bare_selects.get(), before + 2);
    common::assert_idle(&mut seeds).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_are_bounded_by_what_was_sent_and_typed_once_bound() {
    let server = common::start_with(common::config_with_accounts()).await;
    let mut alice = sql_client(&server, common::ALICE).await;
    // A result typed only by its parameter: described after binding, as it streams.
    let mut prepared = alice
        .prepare("SELECT $1 + 1 AS answer".into(), None)
        .await
        .unwrap();
    prepared
        .set_parameters(
            RecordBatch::try_from_iter([(
                "$1",
                Arc::new(Int64Array::from(vec![41])) as Arc<dyn Array>,
            )])
            .unwrap(),
        )
        .unwrap();
    let info = prepared.execute().await.unwrap();
    let described = info.clone().try_decode_schema().unwrap();
    let batches = fetch(&mut alice, info).await.unwrap();
    assert_eq!(batches[0].schema().as_ref(), &described);
    assert_eq!(
        batches[0].column(0).as_primitive::<Int64Type>().value(0),
        42
    );
    prepared.close().await.unwrap();

    // 1 MiB of views of one 64 KiB string (4 GiB referenced) as a parameter batch.
    let mut builder = arrow::array::StringViewBuilder::new();
    let block = builder.append_block(arrow::buffer::Buffer::from(vec![b'x'; 64 << 10]));
    for _ in 0..65_536 {
        builder.try_append_view(block, 0, 64 << 10).unwrap();
    }
    let bomb =
        RecordBatch::try_from_iter([("$1", Arc::new(builder.finish()) as Arc<dyn Array>)]).unwrap();
    let mut prepared = alice
        .prepare("SELECT length($1) AS n".into(), None)
        .await
        .unwrap();
    prepared.set_parameters(bomb).unwrap();
    let mut bob = sql_client(&server, common::BOB).await;
    let started = std::time::Instant::now();
    let (refused, answer) = tokio::join!(prepared.execute(), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        scalar(&mut bob, "SELECT 42").await
    });
    assert_eq!(code(refused.unwrap_err()), tonic::Code::InvalidArgument);
    assert_eq!(answer, 42);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    server.stop().await.unwrap();
}

//! Hostile test guest: tries the capability named by the `probe` parameter
//! (`read_file`, `write_file`, `env`, `connect`, `sleep`) and reports what happened
//! as a one-row batch `{probe, outcome}` where outcome starts with `denied` or
//! `ALLOWED`. The host must deny all of them (and stop `sleep` outright).

use arrow_array::StringArray;
use mallard_exchanger::prelude::*;
use std::time::Duration;

/// The probe to run, chosen at open.
pub struct WasiProbe {
    probe: String,
    output: SchemaRef,
}

fn attempt(probe: &str) -> String {
    let result: Result<String, String> = match probe {
        "read_file" => std::fs::read_to_string("/etc/passwd")
            .map(|s| format!("{} bytes", s.len()))
            .map_err(|e| e.to_string()),
        "write_file" => std::fs::write("/tmp/mallard-probe", b"x")
            .map(|_| "wrote".into())
            .map_err(|e| e.to_string()),
        "env" => {
            let vars: Vec<_> = std::env::vars().collect();
            if vars.is_empty() {
                Err("no variables".into())
            } else {
                Ok(format!("{} variables", vars.len()))
            }
        }
        "connect" => std::net::TcpStream::connect("127.0.0.1:8815")
            .map(|_| "connected".into())
            .map_err(|e| e.to_string()),
        "sleep" => {
            std::thread::sleep(Duration::from_secs(3600));
            Ok("slept an hour".into())
        }
        other => Err(format!("unknown probe {other}")),
    };
    match result {
        Ok(what) => format!("ALLOWED: {what}"),
        Err(why) => format!("denied: {why}"),
    }
}

impl Exchanger for WasiProbe {
    const INFO: Info = Info {
        name: "hostile_wasi_probe",
        version: "0.1.0",
        description: "probes WASI capabilities",
    };
    fn open(_: SchemaRef, params: &Params) -> Result<Self, ExchangeError> {
        let probe = params.get("probe").unwrap_or("read_file").to_owned();
        let output = Schema::new(vec![
            Field::new("probe", DataType::Utf8, false),
            Field::new("outcome", DataType::Utf8, false),
        ]);
        Ok(Self {
            probe,
            output: Arc::new(output),
        })
    }
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }
    fn push(&mut self, _: RecordBatch) -> Result<Vec<RecordBatch>, ExchangeError> {
        let outcome = attempt(&self.probe);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![self.probe.clone()])),
            Arc::new(StringArray::from(vec![outcome])),
        ];
        Ok(vec![RecordBatch::try_new(self.output.clone(), columns)?])
    }
}

export_exchanger!(WasiProbe);

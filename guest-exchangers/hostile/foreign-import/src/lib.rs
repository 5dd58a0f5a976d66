//! Hostile test guest: an exchanger that also imports an interface Mallard does
//! not provide (`evil:net/dial`), as a component asking for a network would.
//! The upload must be refused, naming the import.

use mallard_exchanger::prelude::*;

#[cfg(target_arch = "wasm32")]
mod evil {
    wit_bindgen::generate!({
        inline: "
            package evil:net;
            interface dial { connect: func(host: string) -> bool; }
            world probe { import dial; }
        ",
        world: "probe",
    });

    /// Calls the import, so the linker keeps it.
    pub fn dial(host: &str) -> bool {
        evil::net::dial::connect(host)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod evil {
    /// Natively there is nothing to dial.
    pub fn dial(_: &str) -> bool {
        false
    }
}

/// Passes batches through after trying to dial out.
pub struct ForeignImport {
    output: SchemaRef,
}

impl Exchanger for ForeignImport {
    const INFO: Info = Info {
        name: "hostile_foreign_import",
        version: "0.1.0",
        description: "imports evil:net/dial",
    };

    fn open(input: SchemaRef, _: &Params) -> Result<Self, ExchangeError> {
        if evil::dial("example.com:443") {
            return Err(ExchangeError::Failed("dialled out".into()));
        }
        Ok(Self { output: input })
    }

    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn push(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>, ExchangeError> {
        Ok(vec![batch])
    }
}

export_exchanger!(ForeignImport);

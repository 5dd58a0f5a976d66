//! The exchangers a server knows: uploaded components (kept under `--data-dir` so
//! they survive restarts) and built-ins compiled natively into the server.
//!
//! On disk, each uploaded exchanger is `<name>.wasm` (the client's bytes) and
//! `<name>.cwasm` (the artifact this server compiled). Only `.cwasm` files written
//! here are ever deserialised; if one does not load, the `.wasm` is compiled again.

use crate::error::{Error, Result};
use crate::sandbox::bindings::ExchangerPre;
use crate::sandbox::engine::SandboxEngine;
use crate::sandbox::meter::CpuMeter;
use crate::sandbox::store::StoreState;
use crate::sandbox::upload::{self, Compiled};
use mallard_exchanger::native::Builtin;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// An uploaded, compiled exchanger.
pub struct Uploaded {
    /// What `upload_exchanger` and `list_exchangers` report.
    pub report: UploadReport,
    /// Ready to instantiate.
    pub pre: ExchangerPre<StoreState>,
    /// CPU time its exchanges' workers have used since it was loaded.
    pub cpu: Arc<CpuMeter>,
}

/// The JSON answer of `upload_exchanger`, also a row of `list_exchangers`.
#[derive(Debug, Clone, Serialize)]
pub struct UploadReport {
    /// Name from the component's own `describe()`.
    pub name: String,
    /// The exchanger's version.
    pub version: String,
    /// One line for humans.
    pub description: String,
    /// SHA-256 of the uploaded bytes, hex.
    pub sha256: String,
    /// Size of the uploaded bytes.
    pub size: usize,
    /// Time to validate and compile, in milliseconds.
    pub compile_ms: f64,
}

/// One row of `list_exchangers`.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    /// Exchanger name.
    pub name: String,
    /// Version (the uploaded one if any, else the built-in's).
    pub version: String,
    /// One line for humans.
    pub description: String,
    /// SHA-256 of the uploaded component, if uploaded.
    pub sha256: Option<String>,
    /// Size of the uploaded component, if uploaded.
    pub size: Option<usize>,
    /// Whether a native build is compiled into the server (`sandbox: off` allowed).
    pub builtin: bool,
    /// Whether a wasm component is uploaded (`sandbox: on` possible).
    pub uploaded: bool,
    /// CPU time its wasm exchanges' workers have used since the server loaded it,
    /// milliseconds.
    pub cpu_ms: f64,
}

/// How an exchange should run.
pub enum Resolved {
    /// In the sandbox.
    Wasm(Arc<Uploaded>),
    /// Natively (built-ins only).
    Native(Builtin),
}

/// The registry of a server.
pub struct Registry {
    engine: Arc<SandboxEngine>,
    dir: Option<PathBuf>,
    uploaded: RwLock<BTreeMap<String, Arc<Uploaded>>>,
    upload_lock: std::sync::Mutex<()>,
    builtins: BTreeMap<&'static str, Builtin>,
}

/// The exchangers compiled natively into this server.
pub fn builtins() -> Vec<Builtin> {
    vec![
        Builtin::of::<add_processed::AddProcessed>(),
        Builtin::of::<running_totals::RunningTotals>(),
        Builtin::of::<delay_classifier::ClassifyDelays>(),
    ]
}

impl Registry {
    /// A registry persisting to `data_dir/exchangers` (if given), loading what is there.
    pub fn open(engine: Arc<SandboxEngine>, data_dir: Option<&Path>) -> Result<Self> {
        let dir = data_dir.map(|d| d.join("exchangers"));
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Internal(format!("cannot create {}: {e}", dir.display())))?;
        }
        let registry = Self {
            engine,
            dir,
            uploaded: RwLock::new(BTreeMap::new()),
            upload_lock: std::sync::Mutex::new(()),
            builtins: builtins().into_iter().map(|b| (b.info.name, b)).collect(),
        };
        registry.load_stored()?;
        Ok(registry)
    }

    /// The engine exchangers run on.
    pub fn engine(&self) -> &Arc<SandboxEngine> {
        &self.engine
    }

    fn load_stored(&self) -> Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error::Internal(format!("{}: {e}", dir.display())))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("wasm") {
                continue;
            }
            match self.load_one(&path) {
                Ok(u) => {
                    tracing::info!(name = ?u.report.name, "restored exchanger");
                    self.uploaded
                        .write()
                        .expect("registry lock")
                        .insert(u.report.name.clone(), Arc::new(u));
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping stored exchanger")
                }
            }
        }
        Ok(())
    }

    fn load_one(&self, wasm_path: &Path) -> Result<Uploaded> {
        let bytes = std::fs::read(wasm_path)
            .map_err(|e| Error::Internal(format!("{}: {e}", wasm_path.display())))?;
        let artifact = wasm_path.with_extension("cwasm");
        // SAFETY: `.cwasm` files in our data directory are written only by `store`.
        let compiled = match unsafe { upload::load_artifact(&self.engine, &artifact) } {
            Ok(c) => c,
            Err(_) => upload::compile(&self.engine, &bytes)?,
        };
        Ok(self.make_entry(&bytes, compiled))
    }

    fn make_entry(&self, bytes: &[u8], compiled: Compiled) -> Uploaded {
        let Compiled {
            info,
            pre,
            compile_ms,
            ..
        } = compiled;
        Uploaded {
            report: UploadReport {
                name: info.name,
                version: info.version,
                description: info.description,
                sha256: hex::encode(Sha256::digest(bytes)),
                size: bytes.len(),
                compile_ms,
            },
            pre,
            cpu: Arc::new(CpuMeter::default()),
        }
    }

    /// Validates, compiles, stores and registers a component. Blocking (compiles).
    pub fn upload(&self, bytes: &[u8]) -> Result<UploadReport> {
        let compiled = upload::compile(&self.engine, bytes)?;
        let name = compiled.info.name.clone();
        // One upload at a time from the limit check to the insert, so two
        // concurrent uploads cannot both pass the same check.
        let _one_at_a_time = self.upload_lock.lock().expect("upload lock");
        {
            let uploaded = self.uploaded.read().expect("registry lock");
            let limits = &self.engine.limits;
            if !uploaded.contains_key(&name) && uploaded.len() >= limits.max_exchangers {
                return Err(Error::ResourceExhausted(format!(
                    "this server already holds {} exchangers (the limit); remove one first",
                    uploaded.len()
                )));
            }
            let others: usize = uploaded
                .values()
                .filter(|u| u.report.name != name)
                .map(|u| u.report.size)
                .sum();
            if others + bytes.len() > limits.max_stored_bytes {
                return Err(Error::ResourceExhausted(format!(
                    "storing {} more bytes would exceed the {} bytes kept for exchangers ({others} in use); \
                     remove one first",
                    bytes.len(),
                    limits.max_stored_bytes
                )));
            }
        }
        self.store(&name, bytes, &compiled)?;
        let entry = self.make_entry(bytes, compiled);
        let report = entry.report.clone();
        self.uploaded
            .write()
            .expect("registry lock")
            .insert(name, Arc::new(entry));
        Ok(report)
    }

    fn store(&self, name: &str, bytes: &[u8], compiled: &Compiled) -> Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let artifact = compiled
            .component
            .serialize()
            .map_err(|e| Error::Internal(format!("serialising {name}: {e:#}")))?;
        write_atomically(&dir.join(format!("{name}.cwasm")), &artifact)?;
        write_atomically(&dir.join(format!("{name}.wasm")), bytes)?;
        Ok(())
    }

    /// Removes an uploaded exchanger; NotFound if there is none by that name.
    pub fn remove(&self, name: &str) -> Result<()> {
        let removed = self.uploaded.write().expect("registry lock").remove(name);
        if removed.is_none() {
            return Err(Error::NotFound(format!(
                "no uploaded exchanger named {name:?}"
            )));
        }
        if let Some(dir) = &self.dir {
            for ext in ["wasm", "cwasm"] {
                let _ = std::fs::remove_file(dir.join(format!("{name}.{ext}")));
            }
        }
        Ok(())
    }

    /// Every exchanger, uploaded or built in.
    pub fn list(&self) -> Vec<Listing> {
        let uploaded = self.uploaded.read().expect("registry lock");
        let mut rows: BTreeMap<String, Listing> = BTreeMap::new();
        for b in self.builtins.values() {
            rows.insert(
                b.info.name.into(),
                Listing {
                    name: b.info.name.into(),
                    version: b.info.version.into(),
                    description: b.info.description.into(),
                    sha256: None,
                    size: None,
                    builtin: true,
                    uploaded: false,
                    cpu_ms: 0.0,
                },
            );
        }
        for u in uploaded.values() {
            let r = &u.report;
            let row = rows.entry(r.name.clone()).or_insert_with(|| Listing {
                name: r.name.clone(),
                version: String::new(),
                description: String::new(),
                sha256: None,
                size: None,
                builtin: false,
                uploaded: false,
                cpu_ms: 0.0,
            });
            row.version = r.version.clone();
            row.description = r.description.clone();
            row.sha256 = Some(r.sha256.clone());
            row.size = Some(r.size);
            row.uploaded = true;
            row.cpu_ms = u.cpu.total().as_secs_f64() * 1e3;
        }
        rows.into_values().collect()
    }

    /// Finds how to run `name` with the sandbox on (wasm) or off (native built-in).
    pub fn resolve(&self, name: &str, sandbox: bool) -> Result<Resolved> {
        if sandbox {
            let uploaded = self.uploaded.read().expect("registry lock");
            match uploaded.get(name) {
                Some(u) => Ok(Resolved::Wasm(u.clone())),
                None if self.builtins.contains_key(name) => Err(Error::NotFound(format!(
                    "exchanger {name:?} is built in but its wasm component is not uploaded; \
                     upload it with upload_exchanger or use \"sandbox\": \"off\""
                ))),
                None => Err(Error::NotFound(format!("no exchanger named {name:?}"))),
            }
        } else {
            match self.builtins.get(name) {
                Some(b) => Ok(Resolved::Native(*b)),
                None if self
                    .uploaded
                    .read()
                    .expect("registry lock")
                    .contains_key(name) =>
                {
                    Err(Error::PermissionDenied(format!(
                        "exchanger {name:?} is uploaded code; it only runs in the sandbox (\"sandbox\": \"on\")"
                    )))
                }
                None => Err(Error::NotFound(format!("no exchanger named {name:?}"))),
            }
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    // `x.wasm.tmp` and `x.cwasm.tmp`: each file has its own temporary name.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let io = |e: std::io::Error| Error::Internal(format!("writing {}: {e}", path.display()));
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(parent) = path.parent()
        && let Ok(dir) = std::fs::File::open(parent)
    {
        let _ = dir.sync_all();
    }
    Ok(())
}

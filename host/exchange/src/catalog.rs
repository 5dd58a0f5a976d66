//! The exchangers a server knows, by owner, name and version: uploads (kept under
//! `--data-dir`, see [`super::layout`]) and the built-ins compiled into the server.
//!
//! - **Namespaces.** An upload belongs to its uploader (`alice/classify`); admins
//!   may upload into, or publish into, the shared namespace, where the built-ins
//!   are too. A bare name resolves to the caller's own exchanger first, then the
//!   shared one; other users' exchangers answer NotFound, exactly as a name that
//!   does not exist, so names do not leak. Admins see every namespace.
//! - **Versions.** Every upload is kept as a version (its `describe()` version and
//!   its sha256); a reference without a pin runs the latest. A running exchange
//!   holds its version ([`Running`]), so a new upload never disturbs it, and a
//!   version with running exchanges is not removed (FailedPrecondition, naming it).
//! - **Quotas** ([`super::quotas`]) are checked before compiling where the check
//!   needs no name (bytes), and after compiling, before anything is stored, where
//!   it does (exchangers per user, versions per exchanger).

use crate::ExchangeSession;
use crate::compile_queue::CompileQueue;
use crate::layout::{Layout, StoredMeta, now_secs};
use crate::metrics::{ExchangerMetrics, MetricsSnapshot};
use crate::native::NativeSession;
use crate::quotas::{Quotas, flags};
use crate::wasm::WasmSession;
use arrow::datatypes::SchemaRef;
use mallard_access::{Principal, Role};
use mallard_core::{Error, Result};
use mallard_exchanger::native::Builtin;
use mallard_protocol::{ExchangerRef, Namespace, Pin, UploadRequest};
use mallard_sandbox::engine::SandboxEngine;
use mallard_sandbox::store::MemoryPool;
use mallard_sandbox::upload::{self, Compiled, Pre, WORLD};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Who an exchanger belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    /// Visible to everyone; written by admins.
    Shared,
    /// One user's.
    User(String),
}

impl Owner {
    /// `shared` or the user name, as listings and metric labels show it.
    pub fn label(&self) -> &str {
        match self {
            Self::Shared => mallard_protocol::exchanger_ref::SHARED_OWNER,
            Self::User(user) => user,
        }
    }

    fn user(&self) -> Option<&str> {
        match self {
            Self::Shared => None,
            Self::User(user) => Some(user),
        }
    }

    /// How a reference names `name` in this namespace (`classify` for shared).
    pub fn qualify(&self, name: &str) -> String {
        match self {
            Self::Shared => name.to_owned(),
            Self::User(user) => format!("{user}/{name}"),
        }
    }
}

/// What `upload_exchanger` reports, and `list_exchangers` per version.
#[derive(Debug, Clone, Serialize)]
pub struct VersionReport {
    /// The reference that runs exactly this version (`alice/classify@sha256:…`).
    pub pinned: String,
    /// The exchanger's version, from `describe()`.
    pub version: String,
    /// One line for humans.
    pub description: String,
    /// SHA-256 of the uploaded bytes, hex; `None` for native built-ins.
    pub sha256: Option<String>,
    /// Size of the uploaded bytes.
    pub size: usize,
    /// Time to validate and compile, milliseconds (0 when restored from the
    /// server's own artifact).
    pub compile_ms: f64,
    /// The WIT world it implements.
    pub wit: &'static str,
    /// Its imports (WASI 0.2 interfaces only, every capability denied).
    pub imports: Vec<String>,
    /// Its exports.
    pub exports: Vec<String>,
    /// Who uploaded it.
    pub uploaded_by: String,
    /// When, in seconds since the Unix epoch.
    pub uploaded_at: u64,
    /// Whether it runs natively (a built-in, `"sandbox": "off"` only).
    pub native: bool,
}

/// What a version runs.
pub enum Code {
    /// A compiled component, ready to instantiate.
    Wasm(Pre),
    /// A built-in's native build.
    Native(Builtin),
}

/// One version of one exchanger.
pub struct Version {
    /// Its namespace.
    pub owner: Owner,
    /// Its name.
    pub name: String,
    /// What it reports.
    pub report: VersionReport,
    /// What runs.
    pub code: Code,
    /// What it has done.
    pub metrics: Arc<ExchangerMetrics>,
    seq: u64,
}

impl Version {
    fn matches(&self, pin: &Pin) -> bool {
        match pin {
            Pin::Latest => true,
            Pin::Version(v) => &self.report.version == v,
            Pin::Sha256(prefix) => self
                .report
                .sha256
                .as_deref()
                .is_some_and(|sha| sha.starts_with(prefix.as_str())),
        }
    }

    fn is_wasm(&self) -> bool {
        matches!(self.code, Code::Wasm(_))
    }

    /// Opens a session of this version for one stream: a fresh sandboxed
    /// instance (its memory charged to `pool`, interrupted when `cancelled` is
    /// set), or a built-in's native session.
    pub fn open_session(
        &self,
        engine: &SandboxEngine,
        (input_header, input_schema): (&[u8], SchemaRef),
        params: &[(String, String)],
        cancelled: Arc<AtomicBool>,
        pool: Arc<MemoryPool>,
    ) -> Result<Box<dyn ExchangeSession>> {
        Ok(match &self.code {
            Code::Wasm(pre) => Box::new(WasmSession::open(
                engine,
                (&self.name, pre),
                (input_header, input_schema),
                params,
                cancelled,
                Some(pool),
            )?),
            Code::Native(builtin) => {
                Box::new(NativeSession::open(builtin, input_schema, params.to_vec())?)
            }
        })
    }

    /// `name@version (sha256:abcd1234)`, for messages.
    pub fn describe(&self) -> String {
        let sha = self.report.sha256.as_deref().map_or("native", |s| &s[..12]);
        format!(
            "{}@{} (sha256:{sha})",
            self.owner.qualify(&self.name),
            self.report.version
        )
    }
}

/// A version an exchange is running on: counted as live until dropped, and
/// never removed while it is.
pub struct Running {
    /// The version.
    pub version: Arc<Version>,
}

impl Running {
    fn start(version: Arc<Version>) -> Self {
        version.metrics.live.fetch_add(1, Ordering::AcqRel);
        version.metrics.calls.fetch_add(1, Ordering::Relaxed);
        Self { version }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.version.metrics.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One exchanger of a listing, with its versions (oldest first).
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    /// How to name it (`alice/classify`, or `classify` when shared).
    pub exchanger: String,
    /// `shared` or the owner's user name.
    pub owner: String,
    /// Its name.
    pub name: String,
    /// The version a reference without a pin runs (the latest upload, else
    /// the native built-in).
    pub latest: String,
    /// Exchanges started, all versions.
    pub calls: u64,
    /// Exchanges that ended with an error, all versions.
    pub errors: u64,
    /// Worker CPU time, all versions, milliseconds.
    pub cpu_ms: f64,
    /// Its versions, oldest first (native built-in first).
    pub versions: Vec<VersionListing>,
}

/// One version of a listing.
#[derive(Debug, Clone, Serialize)]
pub struct VersionListing {
    /// What it reported at upload.
    #[serde(flatten)]
    pub report: VersionReport,
    /// What it has done since this server loaded it.
    pub metrics: MetricsSnapshot,
}

/// An exchanger: its namespace and name.
pub type Key = (Owner, String);
/// Every exchanger's versions, oldest first (a built-in's native one first).
type Exchangers = BTreeMap<Key, Vec<Arc<Version>>>;

/// The exchangers of a server.
pub struct Catalog {
    engine: Arc<SandboxEngine>,
    quotas: Quotas,
    layout: Option<Layout>,
    exchangers: RwLock<Exchangers>,
    /// Serialises the quota checks of uploads with their inserts.
    upload_lock: Mutex<()>,
    /// Turns at the compiler, one at a time, users served in turn; a turn is held
    /// by the compiling thread (also by one whose caller gave up on it at the
    /// compile-time quota).
    compile_queue: Arc<CompileQueue>,
    next_seq: AtomicU64,
}

/// The exchangers compiled natively into this server.
pub fn builtins() -> Vec<Builtin> {
    vec![
        Builtin::of::<add_processed::AddProcessed>(),
        Builtin::of::<running_totals::RunningTotals>(),
        Builtin::of::<delay_classifier::ClassifyDelays>(),
        Builtin::of::<pseudonymize::Pseudonymize>(),
    ]
}

impl Catalog {
    /// A catalogue persisting to `data_dir/exchangers` (if given), loading what
    /// is there.
    pub fn open(
        engine: Arc<SandboxEngine>,
        quotas: Quotas,
        data_dir: Option<&Path>,
    ) -> Result<Self> {
        let layout = data_dir.map(Layout::open).transpose()?;
        let compile_queue = CompileQueue::new(quotas.max_compile_wait);
        let catalog = Self {
            engine,
            quotas,
            layout,
            exchangers: RwLock::new(BTreeMap::new()),
            upload_lock: Mutex::new(()),
            compile_queue,
            next_seq: AtomicU64::new(0),
        };
        for builtin in builtins() {
            let info = builtin.info;
            catalog.insert(Version {
                owner: Owner::Shared,
                name: info.name.to_owned(),
                report: VersionReport {
                    pinned: info.name.to_owned(),
                    version: info.version.to_owned(),
                    description: info.description.to_owned(),
                    sha256: None,
                    size: 0,
                    compile_ms: 0.0,
                    wit: WORLD,
                    imports: Vec::new(),
                    exports: Vec::new(),
                    uploaded_by: "built-in".into(),
                    uploaded_at: 0,
                    native: true,
                },
                code: Code::Native(builtin),
                metrics: Arc::default(),
                seq: 0,
            });
        }
        catalog.restore();
        Ok(catalog)
    }

    /// The engine exchangers run on.
    pub fn engine(&self) -> &Arc<SandboxEngine> {
        &self.engine
    }

    /// The quotas uploads and exchanges run under.
    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    fn restore(&self) {
        let Some(layout) = &self.layout else { return };
        for stored in layout.scan() {
            let owner = stored.owner.map_or(Owner::Shared, Owner::User);
            match self.load_stored(&stored.wasm) {
                Ok((bytes, compiled)) if compiled.info.name == stored.name => {
                    self.next_seq
                        .fetch_max(stored.meta.seq + 1, Ordering::Relaxed);
                    let version = self.make_version(owner, &bytes, compiled, stored.meta);
                    tracing::info!(exchanger = %version.describe(), "restored exchanger");
                    self.insert(version);
                }
                Ok((_, compiled)) => tracing::warn!(
                    path = %stored.wasm.display(), described = ?compiled.info.name,
                    "skipping stored exchanger whose name does not match its directory"
                ),
                Err(e) => {
                    tracing::warn!(path = %stored.wasm.display(), error = %e, "skipping stored exchanger")
                }
            }
        }
    }

    fn load_stored(&self, wasm: &Path) -> Result<(Vec<u8>, Compiled)> {
        let bytes =
            std::fs::read(wasm).map_err(|e| Error::internal(format!("{}: {e}", wasm.display())))?;
        // SAFETY: `.cwasm` files in our data directory are written only by `Layout::store`.
        let compiled =
            match unsafe { upload::load_artifact(&self.engine, &wasm.with_extension("cwasm")) } {
                Ok(c) => c,
                Err(_) => upload::compile(&self.engine, &bytes)?,
            };
        Ok((bytes, compiled))
    }

    fn make_version(
        &self,
        owner: Owner,
        bytes: &[u8],
        compiled: Compiled,
        meta: StoredMeta,
    ) -> Version {
        let sha256 = hex::encode(Sha256::digest(bytes));
        let name = compiled.info.name.clone();
        Version {
            report: VersionReport {
                pinned: format!("{}@sha256:{sha256}", owner.qualify(&name)),
                version: compiled.info.version,
                description: compiled.info.description,
                sha256: Some(sha256),
                size: bytes.len(),
                compile_ms: compiled.compile_ms,
                wit: compiled.world,
                imports: compiled.imports,
                exports: compiled.exports,
                uploaded_by: meta.uploaded_by,
                uploaded_at: meta.uploaded_at,
                native: false,
            },
            owner,
            name,
            code: Code::Wasm(compiled.pre),
            metrics: Arc::default(),
            seq: meta.seq,
        }
    }

    fn insert(&self, version: Version) -> Arc<Version> {
        let version = Arc::new(version);
        let mut exchangers = self.exchangers.write().expect("catalog lock");
        let versions = exchangers
            .entry((version.owner.clone(), version.name.clone()))
            .or_default();
        versions.push(version.clone());
        versions.sort_by_key(|v| (v.is_wasm(), v.seq));
        version
    }

    /// Whether `principal` may see `owner`'s exchangers.
    fn visible(principal: &Principal, owner: &Owner) -> bool {
        match owner {
            Owner::Shared => true,
            Owner::User(user) => principal.role == Role::Admin || *user == principal.user,
        }
    }

    /// The namespaces a reference looks in, in order.
    fn namespaces(principal: &Principal, namespace: &Namespace) -> Vec<Owner> {
        match namespace {
            Namespace::Any => vec![Owner::User(principal.user.clone()), Owner::Shared],
            Namespace::Shared => vec![Owner::Shared],
            Namespace::User(user) => vec![Owner::User(user.clone())],
        }
    }

    /// Finds the version `reference` names for `principal`, sandboxed (`wasm`)
    /// or native, and marks it running until the returned guard drops.
    pub fn resolve(
        &self,
        principal: &Principal,
        reference: &ExchangerRef,
        wasm: bool,
    ) -> Result<Running> {
        let exchangers = self.exchangers.read().expect("catalog lock");
        // Started under the lock, so `remove` (write lock) sees it running.
        Self::find(&exchangers, principal, reference, wasm).map(Running::start)
    }

    /// The version `reference` names for `principal`, without running it (to
    /// learn its output schema when a query is planned).
    pub fn peek(
        &self,
        principal: &Principal,
        reference: &ExchangerRef,
        wasm: bool,
    ) -> Result<Arc<Version>> {
        let exchangers = self.exchangers.read().expect("catalog lock");
        Self::find(&exchangers, principal, reference, wasm)
    }

    fn find(
        exchangers: &Exchangers,
        principal: &Principal,
        reference: &ExchangerRef,
        wasm: bool,
    ) -> Result<Arc<Version>> {
        let mut other_kind = false;
        for owner in Self::namespaces(principal, &reference.namespace) {
            if !Self::visible(principal, &owner) {
                continue;
            }
            let Some(versions) = exchangers.get(&(owner, reference.name.clone())) else {
                continue;
            };
            let found = versions
                .iter()
                .rev()
                .find(|v| v.is_wasm() == wasm && v.matches(&reference.pin));
            if let Some(version) = found {
                return Ok(version.clone());
            }
            let same_kind: Vec<String> = versions
                .iter()
                .filter(|v| v.is_wasm() == wasm)
                .map(|v| v.describe())
                .collect();
            if same_kind.is_empty() {
                other_kind = true;
            } else if reference.namespace != Namespace::Any {
                return Err(Error::not_found(format!(
                    "exchanger {reference} matches no version; there are: {}",
                    same_kind.join(", ")
                )));
            }
        }
        Err(match (other_kind, wasm) {
            (true, true) => Error::not_found(format!(
                "exchanger {reference} is built in but its wasm component is not uploaded; \
                 upload it with upload_exchanger or use \"sandbox\": \"off\""
            )),
            (true, false) => Error::permission_denied(format!(
                "exchanger {reference} is uploaded code; it only runs in the sandbox (\"sandbox\": \"on\")"
            )),
            (false, _) => Error::not_found(format!(
                "no exchanger {reference} (list_exchangers shows yours and the shared ones)"
            )),
        })
    }

    /// Validates, compiles and stores `request`'s component as a new version in
    /// the uploader's namespace (or the shared one). Blocking (compiles).
    pub fn upload(&self, uploader: &Principal, request: &UploadRequest) -> Result<Arc<Version>> {
        let owner = if request.options.shared {
            Owner::Shared
        } else {
            Owner::User(uploader.user.clone())
        };
        let bytes = &request.component;
        upload::check_format(bytes, self.engine.limits.max_component_bytes)?;
        let sha256 = hex::encode(Sha256::digest(bytes));
        {
            let exchangers = self.exchangers.read().expect("catalog lock");
            if let Some(same) = exchangers
                .iter()
                .filter(|((o, _), _)| *o == owner)
                .flat_map(|(_, versions)| versions)
                .find(|v| v.report.sha256.as_deref() == Some(sha256.as_str()))
            {
                // The same bytes again: nothing to compile or store.
                return Ok(same.clone());
            }
            self.check_bytes(&exchangers, &owner, bytes.len())?;
        }
        let compiled = self.compile(&uploader.user, bytes)?;
        let name = compiled.info.name.clone();
        let _one_at_a_time = self.upload_lock.lock().expect("upload lock");
        {
            let exchangers = self.exchangers.read().expect("catalog lock");
            self.check_bytes(&exchangers, &owner, bytes.len())?;
            self.check_counts(&exchangers, &owner, &name)?;
        }
        let meta = StoredMeta {
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed).max(1),
            uploaded_by: uploader.user.clone(),
            uploaded_at: now_secs(),
        };
        if let Some(layout) = &self.layout {
            let artifact = compiled
                .component
                .serialize()
                .map_err(|e| Error::internal(format!("serialising {name}: {e:#}")))?;
            layout.store(owner.user(), &name, &sha256, bytes, &artifact, &meta)?;
        }
        Ok(self.insert(self.make_version(owner, bytes, compiled, meta)))
    }

    /// Compiles on a thread of its own once `user`'s turn at the compiler comes
    /// (see [`CompileQueue`]), giving up after the compile-time quota (the thread
    /// finishes its work in the background, still holding the turn, so abandoned
    /// compiles cannot pile up).
    fn compile(&self, user: &str, bytes: &bytes::Bytes) -> Result<Compiled> {
        let turn = self.compile_queue.turn(user)?;
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let engine = self.engine.clone();
        let bytes = bytes.clone();
        std::thread::Builder::new()
            .name("mallard-compile".into())
            .spawn(move || {
                let _turn = turn;
                let _ = done_tx.send(upload::compile(&engine, &bytes));
            })
            .map_err(|e| Error::internal(format!("compile thread: {e}")))?;
        let limit = self.quotas.max_compile_time;
        match done_rx.recv_timeout(limit) {
            Ok(result) => result,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                Err(Error::resource_exhausted(format!(
                    "compiling the component took longer than the {} s allowed per upload ({})",
                    limit.as_secs_f64(),
                    flags::COMPILE_TIME
                )))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                Err(Error::internal("compile thread failed"))
            }
        }
    }

    fn check_bytes(&self, exchangers: &Exchangers, owner: &Owner, adding: usize) -> Result<()> {
        let sizes = |filter: &dyn Fn(&Owner) -> bool| -> usize {
            exchangers
                .iter()
                .filter(|((o, _), _)| filter(o))
                .flat_map(|(_, vs)| vs)
                .map(|v| v.report.size)
                .sum()
        };
        let total = sizes(&|_| true);
        if total + adding > self.quotas.stored_bytes_total {
            return Err(Error::resource_exhausted(format!(
                "storing {adding} more bytes would exceed the {} MiB this server keeps for \
                 exchangers ({total} bytes in use; {})",
                self.quotas.stored_bytes_total >> 20,
                flags::STORED_TOTAL
            )));
        }
        if let Owner::User(user) = owner {
            let mine = sizes(&|o| o == owner);
            if mine + adding > self.quotas.stored_bytes_per_user {
                return Err(Error::resource_exhausted(format!(
                    "storing {adding} more bytes would exceed the {} MiB of exchangers user {user:?} \
                     may keep ({mine} bytes in use; {}); remove a version first",
                    self.quotas.stored_bytes_per_user >> 20,
                    flags::STORED_PER_USER
                )));
            }
        }
        Ok(())
    }

    fn check_counts(&self, exchangers: &Exchangers, owner: &Owner, name: &str) -> Result<()> {
        let versions = exchangers
            .get(&(owner.clone(), name.to_owned()))
            .map_or(0, |vs| vs.iter().filter(|v| v.is_wasm()).count());
        if versions >= self.quotas.max_versions_per_exchanger {
            return Err(Error::resource_exhausted(format!(
                "{} already has {versions} versions, the most kept ({}); remove one first",
                owner.qualify(name),
                flags::VERSIONS
            )));
        }
        if let Owner::User(user) = owner
            && versions == 0
        {
            let names = exchangers.keys().filter(|(o, _)| o == owner).count();
            if names >= self.quotas.max_exchangers_per_user {
                return Err(Error::resource_exhausted(format!(
                    "user {user:?} already keeps {names} exchangers, the most allowed ({}); \
                     remove one first",
                    flags::EXCHANGERS
                )));
            }
        }
        Ok(())
    }

    /// Removes the versions `reference` names (all of them without a pin) from
    /// the namespace it names (the caller's own for a bare name). Nothing is
    /// removed if any of them is running.
    pub fn remove(&self, principal: &Principal, reference: &ExchangerRef) -> Result<Vec<String>> {
        // A bare name removes only the caller's own: shared ones must be named
        // `shared/NAME`, so no admin removes one by accident.
        let owners = match &reference.namespace {
            Namespace::Any => vec![Owner::User(principal.user.clone())],
            other => Self::namespaces(principal, other),
        };
        let mut exchangers = self.exchangers.write().expect("catalog lock");
        for owner in owners {
            if !Self::visible(principal, &owner) {
                continue;
            }
            let key = (owner.clone(), reference.name.clone());
            let Some(versions) = exchangers.get(&key) else {
                continue;
            };
            let chosen: Vec<Arc<Version>> = versions
                .iter()
                .filter(|v| v.is_wasm() && v.matches(&reference.pin))
                .cloned()
                .collect();
            if chosen.is_empty() {
                continue;
            }
            if owner == Owner::Shared && principal.role != Role::Admin {
                return Err(Error::permission_denied(format!(
                    "{reference} is shared; only an admin may remove it"
                )));
            }
            let running: Vec<String> = chosen
                .iter()
                .filter_map(|v| {
                    let live = v.metrics.live.load(Ordering::Acquire);
                    (live > 0).then(|| format!("{} ({live} running)", v.describe()))
                })
                .collect();
            if !running.is_empty() {
                return Err(Error::failed_precondition(format!(
                    "not removed: {} still runs exchanges; nothing was removed, retry when they end \
                     (or pin the version to remove)",
                    running.join(", ")
                )));
            }
            let versions = exchangers.get_mut(&key).expect("present");
            versions.retain(|v| !chosen.iter().any(|c| Arc::ptr_eq(c, v)));
            if versions.is_empty() {
                exchangers.remove(&key);
            }
            if let Some(layout) = &self.layout {
                for v in &chosen {
                    layout.remove(
                        owner.user(),
                        &v.name,
                        v.report.sha256.as_deref().unwrap_or_default(),
                    );
                }
            }
            return Ok(chosen.iter().map(|v| v.describe()).collect());
        }
        Err(Error::not_found(format!(
            "no uploaded exchanger {reference} of yours"
        )))
    }

    /// `reference`'s uploaded version for `principal`, named by its full sha256
    /// (`OWNER/NAME@sha256:…`): the one version a peer holding the same bytes
    /// resolves it to.
    pub fn pin(&self, principal: &Principal, reference: &ExchangerRef) -> Result<ExchangerRef> {
        let exchangers = self.exchangers.read().expect("catalog lock");
        let version = Self::find(&exchangers, principal, reference, true)?;
        let sha256 = version
            .report
            .sha256
            .clone()
            .ok_or_else(|| Error::invalid_argument("built-ins are shared already"))?;
        Ok(ExchangerRef {
            namespace: match &version.owner {
                Owner::Shared => Namespace::Shared,
                Owner::User(user) => Namespace::User(user.clone()),
            },
            name: version.name.clone(),
            pin: Pin::Sha256(sha256),
        })
    }

    /// Copies a user's version (the latest unless pinned) into the shared
    /// namespace, where everyone can run it. Admin only (checked by the caller).
    pub fn publish(&self, principal: &Principal, reference: &ExchangerRef) -> Result<Arc<Version>> {
        let source = {
            let exchangers = self.exchangers.read().expect("catalog lock");
            Self::find(&exchangers, principal, reference, true)?
        };
        if source.owner == Owner::Shared {
            return Err(Error::already_exists(format!(
                "{} is already shared",
                source.describe()
            )));
        }
        let Code::Wasm(pre) = &source.code else {
            return Err(Error::invalid_argument("built-ins are shared already"));
        };
        let sha256 = source.report.sha256.clone().unwrap_or_default();
        let _one_at_a_time = self.upload_lock.lock().expect("upload lock");
        {
            let exchangers = self.exchangers.read().expect("catalog lock");
            if let Some(same) = exchangers
                .get(&(Owner::Shared, source.name.clone()))
                .and_then(|vs| {
                    vs.iter()
                        .find(|v| v.report.sha256.as_deref() == Some(&sha256))
                })
            {
                return Ok(same.clone());
            }
            self.check_bytes(&exchangers, &Owner::Shared, source.report.size)?;
            self.check_counts(&exchangers, &Owner::Shared, &source.name)?;
        }
        let meta = StoredMeta {
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed).max(1),
            uploaded_by: source.report.uploaded_by.clone(),
            uploaded_at: now_secs(),
        };
        if let Some(layout) = &self.layout {
            let from = layout.dir(source.owner.user(), &source.name);
            let read = |ext: &str| {
                let path = from.join(format!("{sha256}.{ext}"));
                std::fs::read(&path)
                    .map_err(|e| Error::internal(format!("{}: {e}", path.display())))
            };
            layout.store(
                None,
                &source.name,
                &sha256,
                &read("wasm")?,
                &read("cwasm")?,
                &meta,
            )?;
        }
        let mut report = source.report.clone();
        report.pinned = format!("{}@sha256:{sha256}", Owner::Shared.qualify(&source.name));
        report.uploaded_at = meta.uploaded_at;
        Ok(self.insert(Version {
            owner: Owner::Shared,
            name: source.name.clone(),
            report,
            code: Code::Wasm(pre.clone()),
            metrics: Arc::default(),
            seq: meta.seq,
        }))
    }

    /// The exchangers `principal` may see: their own and the shared ones (an
    /// admin sees all), each with its versions and metrics.
    pub fn list(&self, principal: &Principal) -> Vec<Listing> {
        self.versions()
            .into_iter()
            .filter(|((owner, _), _)| Self::visible(principal, owner))
            .map(|((owner, name), versions)| {
                let versions: Vec<VersionListing> = versions
                    .iter()
                    .map(|v| VersionListing {
                        report: v.report.clone(),
                        metrics: v.metrics.snapshot(),
                    })
                    .collect();
                Listing {
                    exchanger: owner.qualify(&name),
                    owner: owner.label().to_owned(),
                    name,
                    latest: versions
                        .last()
                        .map(|v| v.report.version.clone())
                        .unwrap_or_default(),
                    calls: versions.iter().map(|v| v.metrics.calls).sum(),
                    errors: versions.iter().map(|v| v.metrics.errors).sum(),
                    cpu_ms: versions.iter().map(|v| v.metrics.cpu_ms).sum(),
                    versions,
                }
            })
            .collect()
    }

    /// Every version of every namespace (for the metrics exporter).
    pub fn versions(&self) -> Vec<(Key, Vec<Arc<Version>>)> {
        self.exchangers
            .read()
            .expect("catalog lock")
            .iter()
            .map(|(k, vs)| (k.clone(), vs.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    //! Resolution, namespaces, running versions and quotas, on a catalogue of
    //! real components built from `guest-exchangers/`.

    use super::*;
    use mallard_core::ErrorKind;
    use mallard_guest_builder::components::{Profile, build};
    use mallard_protocol::upload::UploadOptions;
    use mallard_sandbox::limits::Limits;
    use std::sync::OnceLock;

    /// add-processed's and running-totals' components, built once per test run.
    fn component(name: &str) -> bytes::Bytes {
        static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
        let dir = DIR.get_or_init(|| {
            build(&["add-processed", "running-totals"], Profile::Release).expect("guests build")
        });
        std::fs::read(dir.join(format!("{}.wasm", name.replace('-', "_"))))
            .expect("built component")
            .into()
    }

    fn catalog(quotas: Quotas) -> Catalog {
        let engine = Arc::new(SandboxEngine::new(Limits::default()).unwrap());
        Catalog::open(engine, quotas, None).unwrap()
    }

    fn who(user: &str, role: Role) -> Principal {
        Principal {
            user: user.into(),
            role,
        }
    }

    fn upload(catalog: &Catalog, by: &Principal, guest: &str) -> Result<Arc<Version>> {
        catalog.upload(
            by,
            &UploadRequest {
                component: component(guest),
                options: UploadOptions::default(),
            },
        )
    }

    fn reference(text: &str) -> ExchangerRef {
        ExchangerRef::parse(text).unwrap()
    }

    #[test]
    fn others_exchangers_answer_exactly_like_missing_ones() {
        let catalog = catalog(Quotas::default());
        let alice = who("alice", Role::User);
        let bob = who("bob", Role::User);
        upload(&catalog, &alice, "add-processed").unwrap();

        let own = catalog
            .peek(&alice, &reference("alice/add_processed"), true)
            .unwrap();
        assert_eq!(own.owner, Owner::User("alice".into()));
        // A bare name finds the caller's own before the shared built-in.
        let bare = catalog
            .peek(&alice, &reference("add_processed"), true)
            .unwrap();
        assert_eq!(bare.owner, Owner::User("alice".into()));

        let hidden = catalog
            .peek(&bob, &reference("alice/add_processed"), true)
            .err()
            .unwrap();
        let missing = catalog
            .peek(&bob, &reference("carol/add_processed"), true)
            .err()
            .unwrap();
        assert_eq!(hidden.kind(), ErrorKind::NotFound);
        assert_eq!(
            hidden.to_string().replace("alice", "carol"),
            missing.to_string(),
            "the refusal must not tell bob that alice has one"
        );
        // Bob's bare name is the shared built-in, which has no wasm upload.
        let shared = catalog
            .peek(&bob, &reference("add_processed"), true)
            .err()
            .unwrap();
        assert_eq!(shared.kind(), ErrorKind::NotFound);
        assert!(shared.to_string().contains("built in"), "{shared}");

        let admin = who("root", Role::Admin);
        assert!(
            catalog
                .peek(&admin, &reference("alice/add_processed"), true)
                .is_ok()
        );
    }

    #[test]
    fn uploaded_code_never_runs_outside_the_sandbox() {
        let catalog = catalog(Quotas::default());
        let alice = who("alice", Role::User);
        upload(&catalog, &alice, "running-totals").unwrap();
        let err = catalog
            .peek(&alice, &reference("alice/running_totals"), false)
            .err()
            .unwrap();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
        // The shared built-in of the same name is the native one.
        let native = catalog
            .peek(&alice, &reference("shared/running_totals"), false)
            .unwrap();
        assert!(!native.is_wasm());
    }

    #[test]
    fn a_running_version_is_not_removed_until_it_ends() {
        let catalog = catalog(Quotas::default());
        let alice = who("alice", Role::User);
        upload(&catalog, &alice, "add-processed").unwrap();
        let name = reference("alice/add_processed");
        let running = catalog.resolve(&alice, &name, true).unwrap();
        let err = catalog.remove(&alice, &name).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
        assert!(
            catalog.peek(&alice, &name, true).is_ok(),
            "nothing was removed"
        );
        drop(running);
        assert_eq!(catalog.remove(&alice, &name).unwrap().len(), 1);
        assert_eq!(
            catalog.peek(&alice, &name, true).err().unwrap().kind(),
            ErrorKind::NotFound
        );
    }

    #[test]
    fn quotas_refuse_at_their_limit_and_name_their_flag() {
        let one = Quotas {
            max_exchangers_per_user: 1,
            ..Quotas::default()
        };
        let limited = catalog(one);
        let alice = who("alice", Role::User);
        upload(&limited, &alice, "add-processed").unwrap();
        // The same bytes again are the same version, not a second exchanger.
        upload(&limited, &alice, "add-processed").unwrap();
        let err = upload(&limited, &alice, "running-totals").err().unwrap();
        assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
        assert!(err.to_string().contains(flags::EXCHANGERS), "{err}");
        // Another user's quota is their own.
        upload(&limited, &who("bob", Role::User), "running-totals").unwrap();

        let size = component("add-processed").len();
        let small = catalog(Quotas {
            stored_bytes_per_user: size - 1,
            ..Quotas::default()
        });
        let err = upload(&small, &alice, "add-processed").err().unwrap();
        assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
        assert!(err.to_string().contains(flags::STORED_PER_USER), "{err}");
        let exact = catalog(Quotas {
            stored_bytes_per_user: size,
            ..Quotas::default()
        });
        upload(&exact, &alice, "add-processed").expect("a component of exactly the quota fits");
    }
}

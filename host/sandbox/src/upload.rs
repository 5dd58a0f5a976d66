//! Turning uploaded bytes into a ready-to-instantiate exchanger: size cap, format
//! checks with precise messages, compile once, check the world, read the
//! self-description.

use crate::bindings::{ExchangerPre, Info, v0_2};
use crate::engine::SandboxEngine;
use crate::store::new_store;
use mallard_core::{Error, Result};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use wasmtime::component::Component;

const WASM_MAGIC: &[u8; 4] = b"\0asm";
const CORE_MODULE_VERSION: [u8; 4] = [1, 0, 0, 0];
const COMPONENT_LAYER: [u8; 2] = [1, 0];

/// The WIT world of contract 0.1 (output returned from each call).
pub const WORLD_0_1: &str = "mallard:exchanger/exchanger@0.1.0";
/// The WIT world of contract 0.2 (output emitted through the host, input
/// columns passed through by reference).
pub const WORLD_0_2: &str = "mallard:exchanger/exchanger@0.2.0";
/// The newest contract, which the SDKs build for.
pub const WORLD: &str = WORLD_0_2;

/// A compiled exchanger ready to instantiate, by the contract it speaks.
#[derive(Clone)]
pub enum Pre {
    /// Contract 0.1.
    V0_1(ExchangerPre<crate::store::StoreState>),
    /// Contract 0.2.
    V0_2(v0_2::ExchangerPre<crate::store::StoreState>),
}
/// The only imports Mallard satisfies: the contract's own type-only interfaces,
/// and WASI 0.2 interfaces (every capability denied), which a guest's standard
/// library links against.
const PROVIDED_IMPORT_PREFIXES: [&str; 7] = [
    "mallard:exchanger/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:cli/",
    "wasi:filesystem/",
    "wasi:sockets/",
];

/// A validated, compiled exchanger component.
pub struct Compiled {
    /// The component's self-description.
    pub info: Info,
    /// The component's imports (instance names), sorted.
    pub imports: Vec<String>,
    /// The component's exports (instance names), sorted.
    pub exports: Vec<String>,
    /// The compiled component (serialisable for restarts).
    pub component: Component,
    /// Ready to instantiate, imports resolved.
    pub pre: Pre,
    /// The world it implements ([`WORLD_0_1`] or [`WORLD_0_2`]).
    pub world: &'static str,
    /// Milliseconds spent compiling and checking.
    pub compile_ms: f64,
}

/// Checks the bytes look like a component before handing them to the compiler.
pub fn check_format(bytes: &[u8], max_bytes: usize) -> Result<()> {
    if bytes.len() > max_bytes {
        return Err(Error::invalid_argument(format!(
            "component is {} bytes, more than the limit of {max_bytes} bytes",
            bytes.len()
        )));
    }
    if bytes.len() < 8 || &bytes[..4] != WASM_MAGIC {
        return Err(Error::invalid_argument(
            "not a WebAssembly file (no \\0asm header); upload the .wasm component itself",
        ));
    }
    if bytes[4..8] == CORE_MODULE_VERSION {
        return Err(Error::invalid_argument(
            "this is a core WebAssembly module, not a component; build the exchanger with \
             `cargo build --target wasm32-wasip2` or `cargo component build`",
        ));
    }
    if bytes[6..8] != COMPONENT_LAYER {
        return Err(Error::invalid_argument("unknown WebAssembly binary layer"));
    }
    Ok(())
}

/// Validates and compiles an uploaded component.
pub fn compile(engine: &SandboxEngine, bytes: &[u8]) -> Result<Compiled> {
    check_format(bytes, engine.limits.max_component_bytes)?;
    let started = Instant::now();
    let component = Component::new(&engine.engine, bytes)
        .map_err(|e| Error::invalid_argument(format!("invalid component: {e:#}")))?;
    finish(engine, component, started)
}

/// Loads a component this server compiled and serialised itself.
///
/// # Safety
/// `path` must hold bytes produced by `Component::serialize` of a compatible engine,
/// written by this server into its own data directory. Never call this on bytes
/// from a client.
pub unsafe fn load_artifact(engine: &SandboxEngine, path: &Path) -> Result<Compiled> {
    let started = Instant::now();
    // SAFETY: the caller guarantees the file is our own serialised artifact.
    let component = unsafe { Component::deserialize_file(&engine.engine, path) }
        .map_err(|e| Error::internal(format!("artifact {}: {e:#}", path.display())))?;
    finish(engine, component, started)
}

/// Whether Mallard links an import of this name (a WASI 0.2 interface).
pub fn is_provided(import: &str) -> bool {
    let version_ok = if import.starts_with("mallard:") {
        import.contains("@0.1.") || import.contains("@0.2.")
    } else {
        import.contains("@0.2.")
    };
    PROVIDED_IMPORT_PREFIXES
        .iter()
        .any(|prefix| import.starts_with(prefix))
        && version_ok
}

fn finish(engine: &SandboxEngine, component: Component, started: Instant) -> Result<Compiled> {
    let ty = component.component_type();
    let mut imports: Vec<String> = ty
        .imports(&engine.engine)
        .map(|(n, _)| n.to_owned())
        .collect();
    let mut exports: Vec<String> = ty
        .exports(&engine.engine)
        .map(|(n, _)| n.to_owned())
        .collect();
    imports.sort();
    exports.sort();
    let missing: Vec<&str> = imports
        .iter()
        .map(String::as_str)
        .filter(|i| !is_provided(i))
        .collect();
    if !missing.is_empty() {
        return Err(Error::invalid_argument(format!(
            "component imports what Mallard does not provide: {}; an exchanger may import \
             only the contract's types and WASI 0.2 interfaces (and gets no capability through them)",
            missing.join(", ")
        )));
    }
    let instance_pre = engine.linker.instantiate_pre(&component).map_err(|e| {
        Error::invalid_argument(format!(
            "component needs imports Mallard does not provide: {e:#}"
        ))
    })?;
    let speaks_0_2 = exports
        .iter()
        .any(|e| e.starts_with("mallard:exchanger/exchange@0.2."));
    let world = if speaks_0_2 { WORLD_0_2 } else { WORLD_0_1 };
    let not_world = |e: wasmtime::Error| {
        Error::invalid_argument(format!(
            "component does not implement the world {world}: {e:#}"
        ))
    };
    let failed_start =
        |e: wasmtime::Error| Error::invalid_argument(format!("component failed to start: {e:#}"));
    let failed_describe = |e: wasmtime::Error| {
        Error::invalid_argument(format!("component's describe() failed: {e:#}"))
    };
    let mut store = new_store(engine, Arc::new(AtomicBool::new(false)), None);
    let (pre, info) = if speaks_0_2 {
        let pre = v0_2::ExchangerPre::new(instance_pre).map_err(not_world)?;
        let instance = retrying_transient(|| pre.instantiate(&mut store)).map_err(failed_start)?;
        let v0_2::Info {
            name,
            version,
            description,
        } = instance
            .mallard_exchanger_exchange()
            .call_describe(&mut store)
            .map_err(failed_describe)?;
        let info = Info {
            name,
            version,
            description,
        };
        (Pre::V0_2(pre), info)
    } else {
        let pre = ExchangerPre::new(instance_pre).map_err(not_world)?;
        let instance = retrying_transient(|| pre.instantiate(&mut store)).map_err(failed_start)?;
        let info = instance
            .mallard_exchanger_exchange()
            .call_describe(&mut store)
            .map_err(failed_describe)?;
        (Pre::V0_1(pre), info)
    };
    mallard_protocol::exchanger_ref::validate_name(&info.name).map_err(Error::from)?;
    check_described("version", &info.version, MAX_VERSION_BYTES)?;
    check_described("description", &info.description, MAX_DESCRIPTION_BYTES)?;
    Ok(Compiled {
        info,
        imports,
        exports,
        component,
        pre,
        world,
        compile_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

/// Longest version string `describe()` may return; it is listed and logged.
pub const MAX_VERSION_BYTES: usize = 64;
/// Longest description `describe()` may return (one line for humans); it is stored
/// with every version and listed to its owner.
pub const MAX_DESCRIPTION_BYTES: usize = 1_024;

/// Instantiations tried before a transient refusal by the kernel is reported.
const START_ATTEMPTS: u32 = 3;

/// Whether `e` is the kernel refusing, for now, to seal the memfd that holds a
/// component's initial memory (EBUSY while pages of the fresh file are still
/// referenced elsewhere, seen on a loaded machine). Wasmtime builds that image on
/// a component's first instantiation and builds it again on the next try.
fn is_transient(e: &wasmtime::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ResourceBusy)
    })
}

/// `attempt()`, tried again (at most [`START_ATTEMPTS`] times in all, 50 then
/// 100 ms apart) while it fails transiently; any other failure is returned as it is.
fn retrying_transient<T>(mut attempt: impl FnMut() -> wasmtime::Result<T>) -> wasmtime::Result<T> {
    let mut tries = 1;
    loop {
        match attempt() {
            Err(e) if tries < START_ATTEMPTS && is_transient(&e) => {
                std::thread::sleep(Duration::from_millis(50 * u64::from(tries)));
                tries += 1;
            }
            other => return other,
        }
    }
}

/// Refuses a `describe()` string that is too long or holds control characters
/// (it would be stored, listed and logged as it came).
fn check_described(what: &str, text: &str, max_bytes: usize) -> Result<()> {
    if text.len() > max_bytes {
        return Err(Error::invalid_argument(format!(
            "component's describe() returned a {what} of {} bytes; at most {max_bytes} are accepted",
            text.len()
        )));
    }
    if text.chars().any(char::is_control) {
        return Err(Error::invalid_argument(format!(
            "component's describe() returned a {what} with control characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn described_strings_are_bounded_and_printable() {
        assert!(
            check_described(
                "description",
                &"d".repeat(MAX_DESCRIPTION_BYTES),
                MAX_DESCRIPTION_BYTES
            )
            .is_ok()
        );
        let long = check_described(
            "description",
            &"d".repeat(MAX_DESCRIPTION_BYTES + 1),
            MAX_DESCRIPTION_BYTES,
        );
        assert!(long.unwrap_err().to_string().contains("at most 1024"));
        assert!(check_described("version", "1.0\n[forged log line]", MAX_VERSION_BYTES).is_err());
    }

    #[test]
    fn only_wasi_0_2_imports_are_provided() {
        assert!(is_provided("wasi:io/streams@0.2.3"));
        assert!(is_provided("wasi:cli/environment@0.2.12"));
        assert!(!is_provided("wasi:http/outgoing-handler@0.2.3"));
        assert!(!is_provided("wasi:io/streams@0.3.0"));
        assert!(!is_provided("evil:net/connect"));
        assert!(is_provided("mallard:exchanger/types@0.1.0"));
        assert!(is_provided("mallard:exchanger/output@0.2.0"));
        assert!(is_provided("mallard:exchanger/input@0.2.0"));
        assert!(!is_provided("mallard:exchanger/types@0.3.0"));
    }

    #[test]
    fn only_the_kernels_busy_refusal_is_tried_again_and_at_most_three_times() {
        let busy = || {
            wasmtime::Error::from(std::io::Error::from(std::io::ErrorKind::ResourceBusy))
                .context("cannot add seals to the memfd")
        };
        let mut calls = 0;
        let third: wasmtime::Result<u8> = retrying_transient(|| {
            calls += 1;
            if calls < 3 { Err(busy()) } else { Ok(7) }
        });
        assert_eq!((third.unwrap(), calls), (7, 3));

        let mut calls = 0;
        let never: wasmtime::Result<u8> = retrying_transient(|| {
            calls += 1;
            Err(busy())
        });
        assert!(never.is_err());
        assert_eq!(calls, START_ATTEMPTS);

        let mut calls = 0;
        let other: wasmtime::Result<u8> = retrying_transient(|| {
            calls += 1;
            Err(wasmtime::Error::msg("a trap in the component's start"))
        });
        assert!(other.is_err());
        assert_eq!(
            calls, 1,
            "a failure of the component itself is not tried again"
        );
    }
}

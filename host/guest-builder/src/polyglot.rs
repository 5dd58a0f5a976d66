//! Building this workspace's Python and JavaScript exchangers from source, for
//! the tests, the benchmarks and the demo (never used by a running server).
//!
//! The toolchains are installed on first use into caches under `~/.cache`:
//! componentize-py and the `flatbuffers` package with pip (`mallard-python/`),
//! componentize-js, apache-arrow and esbuild with npm (`mallard-node/`). Built
//! components are cached by a hash of their sources and the toolchain versions,
//! under `$CARGO_TARGET_DIR/guests-polyglot/`.

use crate::BuildError;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// componentize-py version (PyPI).
pub const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";
/// The pure-Python FlatBuffers runtime the Python SDK writes headers with.
pub const FLATBUFFERS: &str = "flatbuffers==25.12.19";
/// The npm packages the JavaScript SDK is built with.
pub const NPM_PACKAGES: &[&str] = &[
    "@bytecodealliance/componentize-js@0.23.0",
    "apache-arrow@21.2.0",
    "esbuild@0.28.2",
];

/// The languages an exchanger may be written in besides Rust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// `guest-exchangers/python/<app>/app.py` with the `mallard_exchanger` package.
    Python,
    /// `guest-exchangers/js/<app>/app.js` with `mallard-exchanger.js`.
    JavaScript,
}

impl Language {
    /// The SDK directory under `guest-exchangers/`.
    pub fn dir(self) -> &'static str {
        match self {
            Self::Python => "python",
            Self::JavaScript => "js",
        }
    }
}

fn cache_root() -> PathBuf {
    std::env::var_os("HOME")
        .map_or_else(std::env::temp_dir, PathBuf::from)
        .join(".cache")
}

fn run(command: &mut Command, what: &str) -> Result<(), BuildError> {
    let output = command
        .output()
        .map_err(|e| BuildError::ToolchainUnavailable(format!("{what}: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(BuildError::Build(format!(
            "{what} exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Runs `install` into a fresh directory beside `dir`, then moves it into place:
/// concurrent first uses (tests in parallel, the demo) never see half an install.
fn install_once(
    dir: &Path,
    what: &str,
    install: impl FnOnce(&Path) -> Result<(), BuildError>,
) -> Result<(), BuildError> {
    if dir.exists() {
        return Ok(());
    }
    static INSTALLS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = INSTALLS.lock().unwrap_or_else(|e| e.into_inner());
    if dir.exists() {
        return Ok(());
    }
    let staging = dir.with_extension(format!("installing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| BuildError::Build(e.to_string()))?;
    eprintln!("installing {what} into {}", dir.display());
    let installed = install(&staging);
    if let Err(e) = installed {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(BuildError::ToolchainUnavailable(e.to_string()));
    }
    if std::fs::rename(&staging, dir).is_err() {
        // Another process finished first; its install is as good as ours.
        let _ = std::fs::remove_dir_all(&staging);
    }
    Ok(())
}

/// pip-installs `packages` together into their own directory under
/// `~/.cache/mallard-python` (named by the packages joined with `+`) once;
/// returns the directory, for `PYTHONPATH`. Shared by the demo and the tests.
pub fn pip_packages(packages: &[&str]) -> Result<PathBuf, BuildError> {
    let name = packages.join("+");
    let dir = cache_root().join("mallard-python").join(&name);
    install_once(&dir, &name, |staging| {
        run(
            Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .arg("--target")
                .arg(staging)
                .args(packages),
            &format!("pip install {name}"),
        )
    })?;
    Ok(dir)
}

fn pip_package(package: &str) -> Result<PathBuf, BuildError> {
    pip_packages(&[package])
}

/// npm-installs the JavaScript toolchain once; returns its `node_modules`.
fn npm_packages() -> Result<PathBuf, BuildError> {
    let dir = cache_root()
        .join("mallard-node")
        .join(NPM_PACKAGES.join("+").replace('/', "_"));
    install_once(&dir, &NPM_PACKAGES.join(" "), |staging| {
        std::fs::write(staging.join("package.json"), br#"{"private": true}"#)
            .map_err(|e| BuildError::Build(e.to_string()))?;
        run(
            Command::new("npm")
                .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
                .arg(staging)
                .args(NPM_PACKAGES),
            "npm install",
        )
    })?;
    Ok(dir.join("node_modules"))
}

/// Installs the toolchain for `language` (a no-op once cached).
pub fn toolchain(language: Language) -> Result<(), BuildError> {
    match language {
        Language::Python => {
            pip_package(COMPONENTIZE_PY)?;
            pip_package(FLATBUFFERS)?;
        }
        Language::JavaScript => {
            npm_packages()?;
        }
    }
    Ok(())
}

/// Hashes every file under `dirs` (sorted by path), skipping caches.
fn hash_sources(hasher: &mut Sha256, dir: &Path) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "__pycache__" || name == "node_modules" || name == "tests" {
            continue;
        }
        if path.is_dir() {
            hash_sources(hasher, &path)?;
        } else if name.ends_with(".py") || name.ends_with(".js") || name.ends_with(".wit") {
            hasher.update(path.to_string_lossy().as_bytes());
            hasher.update(std::fs::read(&path)?);
        }
    }
    Ok(())
}

/// Builds `guest-exchangers/<language>/<app>` (e.g. `add_processed`,
/// `hostile/endless_loop`) into a component and returns its path.
pub fn build(language: Language, app: &str) -> Result<PathBuf, BuildError> {
    let workspace = crate::components::workspace();
    let sdk = workspace.join("guest-exchangers").join(language.dir());
    // Both SDKs speak contract 0.2 (output through `emit`, pass-through columns).
    let wit = workspace.join("wit").join("0.2.0");
    let source = sdk.join(app);
    if !source.is_dir() {
        return Err(BuildError::Build(format!("no {}", source.display())));
    }
    let mut hasher = Sha256::new();
    hasher.update(format!("{COMPONENTIZE_PY} {FLATBUFFERS} {NPM_PACKAGES:?}"));
    hash_sources(&mut hasher, &sdk).map_err(|e| BuildError::Build(e.to_string()))?;
    hash_sources(&mut hasher, &wit).map_err(|e| BuildError::Build(e.to_string()))?;
    let digest = hex::encode(&hasher.finalize()[..8]);
    let out_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join("guests-polyglot");
    std::fs::create_dir_all(&out_dir).map_err(|e| BuildError::Build(e.to_string()))?;
    let stem = format!("{}-{}-{digest}", language.dir(), app.replace('/', "-"));
    let out = out_dir.join(format!("{stem}.wasm"));
    if out.exists() {
        return Ok(out);
    }
    // Builds of one component may run at once (tests in parallel): each writes
    // its own file and the last rename wins with identical bytes.
    static BUILDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let partial = out_dir.join(format!("{stem}.{}-{n}.partial.wasm", std::process::id()));
    match language {
        Language::Python => {
            let componentize = pip_package(COMPONENTIZE_PY)?;
            let flatbuffers = pip_package(FLATBUFFERS)?;
            run(
                Command::new("python3")
                    .args([
                        "-c",
                        "import sys; from componentize_py import script; \
                         sys.argv[0] = 'componentize-py'; sys.exit(script())",
                        "-d",
                    ])
                    .arg(&wit)
                    .args(["-w", "exchanger", "componentize", "app", "-p"])
                    .arg(&source)
                    .arg("-p")
                    .arg(&sdk)
                    .arg("-p")
                    .arg(&flatbuffers)
                    .arg("-o")
                    .arg(&partial)
                    .env("PYTHONPATH", &componentize),
                &format!("componentize-py {app}"),
            )?;
        }
        Language::JavaScript => {
            let modules = npm_packages()?;
            let bundle = partial.with_extension("js");
            run(
                Command::new(modules.join(".bin/esbuild"))
                    .arg(source.join("app.js"))
                    .args([
                        "--bundle",
                        "--format=esm",
                        "--platform=neutral",
                        "--main-fields=module,main",
                        "--log-level=warning",
                        // The host's interfaces: componentize-js binds them.
                        "--external:mallard:exchanger/*",
                    ])
                    .arg(format!("--outfile={}", bundle.display()))
                    .env("NODE_PATH", &modules),
                &format!("esbuild {app}"),
            )?;
            run(
                Command::new("node")
                    .arg(modules.join("@bytecodealliance/componentize-js/src/cli.js"))
                    .arg(&bundle)
                    .arg("--wit")
                    .arg(&wit)
                    .args(["--world-name", "exchanger"])
                    // No fetch(), no HTTP handler: the host offers neither.
                    .args(["--disable", "http", "fetch-event"])
                    .arg("-o")
                    .arg(&partial),
                &format!("componentize-js {app}"),
            )?;
        }
    }
    std::fs::rename(&partial, &out).map_err(|e| BuildError::Build(e.to_string()))?;
    Ok(out)
}

/// The directory holding pyarrow for the Python SDK's unit tests (installed once).
pub fn pyarrow_for_tests() -> Result<PathBuf, BuildError> {
    pip_package("pyarrow==26.0.1")
}

/// The `node_modules` of the JavaScript toolchain (installed once).
pub fn node_modules() -> Result<PathBuf, BuildError> {
    npm_packages()
}

/// The `flatbuffers` package directory (installed once).
pub fn flatbuffers_package() -> Result<PathBuf, BuildError> {
    pip_package(FLATBUFFERS)
}

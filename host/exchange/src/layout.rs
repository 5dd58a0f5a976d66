//! Where uploaded exchangers live under `--data-dir`, and moving the old flat
//! layout into it.
//!
//! ```text
//! exchangers/
//!   shared/<name>/<sha256>.wasm     the uploaded bytes
//!   shared/<name>/<sha256>.cwasm    the artifact this server compiled from them
//!   shared/<name>/<sha256>.json     upload sequence number, uploader, time
//!   user-<hex of owner>/<name>/...  the same for one user's namespace
//! ```
//!
//! Owners are hex-encoded so any user name is a safe directory name. Before
//! namespaces, uploads were `exchangers/<name>.wasm` (admin-only): they move into
//! `shared/` the first time a newer server opens the directory.

use mallard_core::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The directory name of the shared namespace.
pub const SHARED_DIR: &str = "shared";
const USER_PREFIX: &str = "user-";

/// What is kept beside each upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredMeta {
    /// Upload order across the server (latest wins).
    pub seq: u64,
    /// Who uploaded it.
    pub uploaded_by: String,
    /// Seconds since the Unix epoch.
    pub uploaded_at: u64,
}

/// One stored upload found on disk.
#[derive(Debug)]
pub struct StoredVersion {
    /// `None` for the shared namespace, else the owner's user name.
    pub owner: Option<String>,
    /// The exchanger's name (its directory).
    pub name: String,
    /// The `.wasm` file.
    pub wasm: PathBuf,
    /// Its metadata.
    pub meta: StoredMeta,
}

/// The `exchangers/` directory of a data dir.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// Opens (creating) `data_dir/exchangers` and migrates the flat layout.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let root = data_dir.join("exchangers");
        std::fs::create_dir_all(&root).map_err(|e| io(&root, e))?;
        let layout = Self { root };
        layout.migrate_flat()?;
        Ok(layout)
    }

    /// The directory of `owner`'s `name`.
    pub fn dir(&self, owner: Option<&str>, name: &str) -> PathBuf {
        let namespace = match owner {
            None => SHARED_DIR.to_owned(),
            Some(user) => format!("{USER_PREFIX}{}", hex::encode(user)),
        };
        self.root.join(namespace).join(name)
    }

    /// Writes one upload: bytes, artifact and metadata, each atomically; the
    /// `.wasm` last, since loading starts from it.
    pub fn store(
        &self,
        owner: Option<&str>,
        name: &str,
        sha256: &str,
        bytes: &[u8],
        artifact: &[u8],
        meta: &StoredMeta,
    ) -> Result<()> {
        let dir = self.dir(owner, name);
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let json = serde_json::to_vec(meta).expect("meta serialises");
        write_atomically(&dir.join(format!("{sha256}.json")), &json)?;
        write_atomically(&dir.join(format!("{sha256}.cwasm")), artifact)?;
        write_atomically(&dir.join(format!("{sha256}.wasm")), bytes)?;
        Ok(())
    }

    /// Deletes one upload's files (and its directory when it was the last).
    pub fn remove(&self, owner: Option<&str>, name: &str, sha256: &str) {
        let dir = self.dir(owner, name);
        for ext in ["wasm", "cwasm", "json"] {
            let _ = std::fs::remove_file(dir.join(format!("{sha256}.{ext}")));
        }
        let _ = std::fs::remove_dir(&dir);
    }

    /// Every stored upload, in upload order. Unreadable entries are skipped
    /// with a warning: one bad file must not keep the server down.
    pub fn scan(&self) -> Vec<StoredVersion> {
        let mut found = Vec::new();
        for namespace in read_dir(&self.root) {
            let Some(dir_name) = file_name(&namespace) else {
                continue;
            };
            let owner = if dir_name == SHARED_DIR {
                None
            } else if let Some(hexed) = dir_name.strip_prefix(USER_PREFIX)
                && let Some(user) = hex::decode(hexed)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
            {
                Some(user)
            } else {
                continue;
            };
            for exchanger in read_dir(&namespace) {
                let Some(name) = file_name(&exchanger) else {
                    continue;
                };
                for wasm in read_dir(&exchanger) {
                    if wasm.extension().and_then(|e| e.to_str()) != Some("wasm") {
                        continue;
                    }
                    let meta = std::fs::read(wasm.with_extension("json"))
                        .ok()
                        .and_then(|b| serde_json::from_slice::<StoredMeta>(&b).ok());
                    match meta {
                        Some(meta) => found.push(StoredVersion {
                            owner: owner.clone(),
                            name: name.clone(),
                            wasm,
                            meta,
                        }),
                        None => {
                            tracing::warn!(path = %wasm.display(), "skipping upload without metadata")
                        }
                    }
                }
            }
        }
        found.sort_by_key(|v| v.meta.seq);
        found
    }

    /// Moves `exchangers/<name>.wasm` (and `.cwasm`) of the flat layout into
    /// the shared namespace.
    fn migrate_flat(&self) -> Result<()> {
        let flat: Vec<PathBuf> = read_dir(&self.root)
            .into_iter()
            .filter(|p| p.is_file() && p.extension().and_then(|e| e.to_str()) == Some("wasm"))
            .collect();
        for (seq, wasm) in flat.into_iter().enumerate() {
            let Some(name) = wasm.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
                continue;
            };
            if mallard_protocol::exchanger_ref::validate_name(&name).is_err() {
                continue;
            }
            let bytes = std::fs::read(&wasm).map_err(|e| io(&wasm, e))?;
            let sha256 = hex::encode(Sha256::digest(&bytes));
            let dir = self.dir(None, &name);
            std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
            let meta = StoredMeta {
                seq: seq as u64,
                uploaded_by: "admin".into(),
                uploaded_at: now_secs(),
            };
            write_atomically(
                &dir.join(format!("{sha256}.json")),
                &serde_json::to_vec(&meta).expect("meta serialises"),
            )?;
            let artifact = wasm.with_extension("cwasm");
            if artifact.exists() {
                let to = dir.join(format!("{sha256}.cwasm"));
                std::fs::rename(&artifact, &to).map_err(|e| io(&artifact, e))?;
            }
            let to = dir.join(format!("{sha256}.wasm"));
            std::fs::rename(&wasm, &to).map_err(|e| io(&wasm, e))?;
            tracing::info!(name = ?name, "moved an exchanger of the flat layout into shared/");
        }
        Ok(())
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn read_dir(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    entries
}

fn file_name(path: &Path) -> Option<String> {
    path.file_name()?.to_str().map(str::to_owned)
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::internal(format!("{}: {e}", path.display()))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    // `x.wasm.tmp`, `x.cwasm.tmp`: each file has its own temporary name.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    file.write_all(bytes).map_err(|e| io(&tmp, e))?;
    file.sync_all().map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    if let Some(parent) = path.parent()
        && let Ok(dir) = std::fs::File::open(parent)
    {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flat_layout_moves_into_shared_and_any_owner_name_is_a_safe_dir() {
        let data = tempfile::tempdir().unwrap();
        let root = data.path().join("exchangers");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("classify.wasm"), b"\0asm old").unwrap();
        std::fs::write(root.join("classify.cwasm"), b"artifact").unwrap();
        let layout = Layout::open(data.path()).unwrap();
        assert!(!root.join("classify.wasm").exists());
        let found = layout.scan();
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].owner.as_deref(), found[0].name.as_str()),
            (None, "classify")
        );
        assert!(found[0].wasm.with_extension("cwasm").exists());

        let owner = "../../etc/o'brien";
        let meta = StoredMeta {
            seq: 7,
            uploaded_by: owner.into(),
            uploaded_at: 1,
        };
        layout
            .store(Some(owner), "classify", "ab12", b"\0asm", b"art", &meta)
            .unwrap();
        assert!(layout.dir(Some(owner), "classify").starts_with(&root));
        let found = layout.scan();
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].owner.as_deref(), Some(owner));
        layout.remove(Some(owner), "classify", "ab12");
        assert_eq!(layout.scan().len(), 1);
    }
}

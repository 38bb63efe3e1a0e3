//! The compiled-code cache: components compiled on this node, by this host,
//! keyed by the wasm's sha256 and the engine build.
//!
//! Layout: `<root>/<engine-key>/<sha256>.cwasm` (+ `<sha256>.lock`), the root
//! and key directories owned by the caller and closed to everyone else. An
//! artifact is written once, atomically (temp file, fsync, rename, fsync of
//! the directory), under an exclusive lock, so concurrent first calls compile
//! once and the others wait and load it. Loading maps the file
//! (`deserialize_file`); an entry that fails to load (truncated, corrupt,
//! from another engine) is a miss and is recompiled, never a crash.
//!
//! Architecture Invariant: the cache never loads a file from a directory it
//! did not create and verify as private; precompiled code is never accepted
//! from outside (a ConfigMap ships `.wasm`, never `.cwasm`).

use std::fs::{self, OpenOptions};
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use wasmtime::Engine;
use wasmtime::component::Component;

/// Whether a load used a cached artifact or compiled one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheOutcome {
    Hit,
    Compiled,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A cache file or directory could not be created, locked or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The cache directory is not private to this user: nothing in it is trusted.
    #[error(
        "{path} is {reason}; the compiled-code cache must be owned by uid {uid} and closed to group and others"
    )]
    Untrusted {
        path: PathBuf,
        reason: String,
        uid: u32,
    },
    /// Cranelift refused the component.
    #[error("{0}")]
    Compile(String),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The engine-build part of the key: the wasmtime version, this host's
/// version and every engine setting that changes compiled code.
pub fn engine_key(engine: &Engine) -> String {
    let mut hasher = std::hash::DefaultHasher::new();
    "wasmtime-48".hash(&mut hasher);
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

#[derive(Debug, Clone)]
pub struct ModuleCache {
    dir: PathBuf,
}

fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Create `path` with mode 0700 if missing, then check it is ours and closed.
fn private_dir(path: &Path) -> Result<(), CacheError> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
    {
        Ok(()) => {}
        Err(source) => return Err(io_error(path)(source)),
    }
    let metadata = fs::metadata(path).map_err(io_error(path))?;
    let uid = effective_uid();
    if metadata.uid() != uid {
        return Err(CacheError::Untrusted {
            path: path.into(),
            reason: format!("owned by uid {}", metadata.uid()),
            uid,
        });
    }
    if metadata.permissions().mode() & 0o077 != 0 {
        return Err(CacheError::Untrusted {
            path: path.into(),
            reason: format!("mode {:o}", metadata.permissions().mode() & 0o7777),
            uid,
        });
    }
    Ok(())
}

impl ModuleCache {
    /// Open (creating if needed) the cache for `engine` under `root`.
    pub fn new(root: &Path, engine: &Engine) -> Result<Self, CacheError> {
        private_dir(root)?;
        let dir = root.join(engine_key(engine));
        private_dir(&dir)?;
        Ok(ModuleCache { dir })
    }

    /// The directory holding this engine's artifacts.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the artifact of the wasm with this digest lives.
    pub fn artifact_path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.cwasm"))
    }

    /// The cached component for `digest`, or `None` on any miss (absent,
    /// truncated, corrupt, incompatible, not ours).
    pub fn load(&self, engine: &Engine, digest: &str) -> Option<Component> {
        if !is_sha256_hex(digest) {
            return None;
        }
        let path = self.artifact_path(digest);
        let metadata = fs::metadata(&path).ok()?;
        if metadata.uid() != effective_uid() || metadata.permissions().mode() & 0o022 != 0 {
            tracing::warn!(path = %path.display(), "ignoring a cache entry this host did not write");
            return None;
        }
        // SAFETY: the file is in a directory only this user can write, and
        // only `load_or_compile` writes there, with output of
        // `Engine::precompile_component` for an engine of the same key.
        // Truncated or corrupt files fail wasmtime's validation and return Err.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => Some(component),
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "cache entry unusable, recompiling");
                None
            }
        }
    }

    /// The cached component for `digest`, compiling `wasm` into the cache
    /// first if needed. Concurrent callers compile once: the others wait on
    /// the lock and then load what the first wrote.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        digest: &str,
        wasm: &[u8],
    ) -> Result<(Component, CacheOutcome), CacheError> {
        if let Some(component) = self.load(engine, digest) {
            return Ok((component, CacheOutcome::Hit));
        }
        let lock_path = self.dir.join(format!("{digest}.lock"));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|errno| io_error(&lock_path)(errno.into()))?;
        if let Some(component) = self.load(engine, digest) {
            return Ok((component, CacheOutcome::Hit));
        }
        // Under the lock, a temporary file of this artifact is a killed
        // compiler's leftover.
        let prefix = format!(".{digest}.cwasm.");
        for entry in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        let started = std::time::Instant::now();
        let compiled = engine
            .precompile_component(wasm)
            .map_err(|err| CacheError::Compile(format!("{err:#}")))?;
        let path = self.artifact_path(digest);
        crate::store::write_atomically(&path, &compiled, 0o600).map_err(io_error(&path))?;
        tracing::info!(
            sha256 = digest,
            path = %path.display(),
            millis = started.elapsed().as_millis() as u64,
            "compiled plugin into the cache"
        );
        // SAFETY: as in `load`: we just wrote this file from
        // `precompile_component` in our private directory.
        let component = unsafe { Component::deserialize_file(engine, &path) }
            .map_err(|err| CacheError::Compile(format!("{err:#}")))?;
        drop(lock);
        Ok((component, CacheOutcome::Compiled))
    }
}

fn is_sha256_hex(digest: &str) -> bool {
    digest.len() == 64 && digest.bytes().all(|byte| byte.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_directory_is_not_trusted() {
        let root = tempfile::tempdir().unwrap();
        let shared = root.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
        let engine = Engine::default();
        let err = ModuleCache::new(&shared, &engine).unwrap_err();
        assert!(matches!(err, CacheError::Untrusted { .. }), "{err}");
        assert!(err.to_string().contains("mode 777"), "{err}");
    }

    #[test]
    fn a_missing_or_garbage_entry_is_a_miss() {
        let root = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = ModuleCache::new(&root.path().join("cache"), &engine).unwrap();
        let digest = "ab".repeat(32);
        assert!(cache.load(&engine, &digest).is_none());
        fs::write(cache.artifact_path(&digest), b"\x7fELF garbage").unwrap();
        fs::set_permissions(
            cache.artifact_path(&digest),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        assert!(cache.load(&engine, &digest).is_none());
        assert!(cache.load(&engine, "../../etc/passwd").is_none());
    }
}

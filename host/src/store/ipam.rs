//! The IPAM store: the `ipam-store` import, backed by the reference
//! host-local's directory `<dataDir>/<network>/` so that the reference plugin
//! and ours can take turns on one node.
//!
//! One file per key; `lock` is the directory's lock file, held with `flock`
//! (as the reference does) for the store's whole life, i.e. the whole IPAM
//! call. All access goes through a `cap_std::fs::Dir`, so no key can name a
//! path outside the directory. Creating a key is atomic with its content
//! (written to a temporary file, then hard-linked into place, which fails if
//! the key exists), so a killed process never leaves a half-written
//! reservation.

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};

/// The reference's default `dataDir`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
const LOCK: &str = "lock";
/// Our temporary files: `.multus-wasm.<key>.<pid>.tmp`. Only names of this
/// shape are ever removed as leftovers (the directory may be shared with the
/// reference host-local or other tools).
const TEMP_PREFIX: &str = ".multus-wasm.";
const TEMP_SUFFIX: &str = ".tmp";
/// The default cap on one network's keys (`wasmLimits.storeMaxKeys`):
/// a /16 of reservations. Values are capped by `maxStringBytes`, so the
/// store's size is bounded by both.
pub const DEFAULT_MAX_KEYS: usize = 65_536;
/// How often a waiter retries the network's lock.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(2);

/// How a store is opened.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// Give up waiting for the lock at this instant.
    pub lock_deadline: std::time::Instant,
    /// Most keys the store may hold; creating more fails.
    pub max_keys: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The network name cannot be a directory name.
    #[error("invalid network name {0:?} for the IPAM store")]
    InvalidNetwork(String),
    /// The store directory could not be created, opened or locked.
    #[error("IPAM store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Another call held the network's lock past this call's deadline.
    #[error(
        "network {network}'s IPAM store ({}) is locked by another ADD or DEL; gave up after {waited_ms} ms",
        path.display()
    )]
    Locked {
        network: String,
        path: PathBuf,
        waited_ms: u128,
    },
}

/// The key/value store of one network, with the network's lock held.
pub trait IpamStore: Send {
    fn get(&mut self, key: &str) -> Result<Option<String>, String>;
    fn list(&mut self) -> Result<Vec<String>, String>;
    fn compare_and_swap(
        &mut self,
        key: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<bool, String>;
    fn delete(&mut self, key: &str) -> Result<bool, String>;
}

/// One network's store, locked while this value lives.
pub struct DirStore {
    dir: Dir,
    path: PathBuf,
    max_keys: usize,
    /// Keys in the directory, counted on the first create.
    keys: Option<usize>,
    _lock: cap_std::fs::File,
}

impl std::fmt::Debug for DirStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirStore")
            .field("path", &self.path)
            .finish()
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0'])
        && name.len() <= 255
}

fn is_our_temporary(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX)
}

/// Our temporary files are written only under the lock, so with the lock
/// held any that exist were left by a writer of ours that died (a killed
/// process). Nobody else's files are touched.
fn remove_stale_temporaries(dir: &Dir) {
    let Ok(entries) = dir.entries() else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_our_temporary(&name) {
            let _ = dir.remove_file(&name);
        }
    }
}

impl DirStore {
    /// Open (creating it 0755, as the reference does) `<data_dir>/<network>`
    /// and take its lock, waiting for whoever holds it until
    /// `options.lock_deadline`.
    pub fn open_locked(
        data_dir: &Path,
        network: &str,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        if !valid_name(network) {
            return Err(StoreError::InvalidNetwork(network.into()));
        }
        let path = data_dir.join(network);
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&path)
            .map_err(io)?;
        let dir = Dir::open_ambient_dir(&path, cap_std::ambient_authority()).map_err(io)?;
        let mut open_options = OpenOptions::new();
        open_options.read(true).create(true).write(true).mode(0o600);
        let lock = dir.open_with(LOCK, &open_options).map_err(io)?;
        let started = std::time::Instant::now();
        loop {
            match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(rustix::io::Errno::WOULDBLOCK) | Err(rustix::io::Errno::INTR) => {
                    if std::time::Instant::now() >= options.lock_deadline {
                        return Err(StoreError::Locked {
                            network: network.into(),
                            path,
                            waited_ms: started.elapsed().as_millis(),
                        });
                    }
                    std::thread::sleep(LOCK_RETRY);
                }
                Err(errno) => return Err(io(errno.into())),
            }
        }
        remove_stale_temporaries(&dir);
        Ok(DirStore {
            dir,
            path,
            max_keys: options.max_keys,
            keys: None,
            _lock: lock,
        })
    }

    /// Count a key about to be created against the cap.
    fn reserve_key(&mut self) -> Result<(), String> {
        let count = match self.keys {
            Some(count) => count,
            None => IpamStore::list(self)?.len(),
        };
        if count >= self.max_keys {
            return Err(format!(
                "the store of {} is full ({} keys, the limit of wasmLimits.storeMaxKeys)",
                self.path.display(),
                self.max_keys
            ));
        }
        self.keys = Some(count + 1);
        Ok(())
    }

    fn key_removed(&mut self) {
        if let Some(count) = self.keys.as_mut() {
            *count = count.saturating_sub(1);
        }
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_key(key: &str) -> Result<(), String> {
        if !valid_name(key) || key == LOCK || key.starts_with('.') {
            return Err(format!("invalid key {key:?}"));
        }
        Ok(())
    }

    fn read(&self, key: &str) -> Result<Option<String>, String> {
        match self.dir.read_to_string(key) {
            Ok(value) => Ok(Some(value)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(format!("read {key}: {err}")),
        }
    }

    /// Write `value` into a fresh temporary file and return its name.
    fn write_temp(&self, key: &str, value: &str) -> Result<String, String> {
        let temp = format!("{TEMP_PREFIX}{key}.{}{TEMP_SUFFIX}", std::process::id());
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true).mode(0o600);
        let mut file = self
            .dir
            .open_with(&temp, &options)
            .map_err(|err| format!("create {temp}: {err}"))?;
        file.write_all(value.as_bytes())
            .map_err(|err| format!("write {temp}: {err}"))?;
        Ok(temp)
    }

    fn create(&mut self, key: &str, value: &str) -> Result<bool, String> {
        if self.read(key)?.is_some() {
            return Ok(false);
        }
        self.reserve_key()?;
        let temp = self.write_temp(key, value)?;
        let linked = self.dir.hard_link(&temp, &self.dir, key);
        let _ = self.dir.remove_file(&temp);
        match linked {
            Ok(()) => Ok(true),
            Err(err) => {
                self.key_removed();
                if err.kind() == std::io::ErrorKind::AlreadyExists {
                    Ok(false)
                } else {
                    Err(format!("create {key}: {err}"))
                }
            }
        }
    }

    fn replace(&self, key: &str, value: &str) -> Result<(), String> {
        let temp = self.write_temp(key, value)?;
        self.dir.rename(&temp, &self.dir, key).map_err(|err| {
            let _ = self.dir.remove_file(&temp);
            format!("replace {key}: {err}")
        })
    }

    fn remove(&mut self, key: &str) -> Result<bool, String> {
        match self.dir.remove_file(key) {
            Ok(()) => {
                self.key_removed();
                Ok(true)
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(format!("delete {key}: {err}")),
        }
    }
}

impl IpamStore for DirStore {
    fn get(&mut self, key: &str) -> Result<Option<String>, String> {
        Self::check_key(key)?;
        self.read(key)
    }

    fn list(&mut self) -> Result<Vec<String>, String> {
        let mut keys = Vec::new();
        for entry in self.dir.entries().map_err(|err| format!("list: {err}"))? {
            let entry = entry.map_err(|err| format!("list: {err}"))?;
            let is_file = entry
                .file_type()
                .map(|kind| kind.is_file())
                .unwrap_or(false);
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_file && Self::check_key(&name).is_ok() {
                keys.push(name);
            }
        }
        keys.sort();
        Ok(keys)
    }

    fn compare_and_swap(
        &mut self,
        key: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<bool, String> {
        Self::check_key(key)?;
        match (expected, new) {
            (None, Some(value)) => self.create(key, value),
            (None, None) => Ok(self.read(key)?.is_none()),
            (Some(expected), new) => {
                if self.read(key)?.as_deref() != Some(expected) {
                    return Ok(false);
                }
                match new {
                    Some(value) => self.replace(key, value)?,
                    None => {
                        self.remove(key)?;
                    }
                }
                Ok(true)
            }
        }
    }

    fn delete(&mut self, key: &str) -> Result<bool, String> {
        Self::check_key(key)?;
        self.remove(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> StoreOptions {
        StoreOptions {
            lock_deadline: std::time::Instant::now() + std::time::Duration::from_secs(5),
            max_keys: DEFAULT_MAX_KEYS,
        }
    }

    #[test]
    fn keys_are_files_holding_exactly_their_values() {
        let root = tempfile::tempdir().unwrap();
        let mut store = DirStore::open_locked(root.path(), "mynet", options()).unwrap();
        assert!(
            store
                .compare_and_swap("10.0.0.2", None, Some("id\r\neth0"))
                .unwrap()
        );
        assert!(
            !store
                .compare_and_swap("10.0.0.2", None, Some("other\r\neth0"))
                .unwrap()
        );
        assert_eq!(
            std::fs::read(root.path().join("mynet/10.0.0.2")).unwrap(),
            b"id\r\neth0"
        );
        assert!(
            store
                .compare_and_swap("last_reserved_ip.0", None, Some("10.0.0.2"))
                .unwrap()
        );
        assert!(
            store
                .compare_and_swap("last_reserved_ip.0", Some("10.0.0.2"), Some("10.0.0.3"))
                .unwrap()
        );
        assert!(
            !store
                .compare_and_swap("last_reserved_ip.0", Some("10.0.0.2"), Some("10.0.0.4"))
                .unwrap()
        );
        assert_eq!(
            store.list().unwrap(),
            vec!["10.0.0.2".to_string(), "last_reserved_ip.0".to_string()]
        );
        assert!(store.delete("10.0.0.2").unwrap());
        assert!(!store.delete("10.0.0.2").unwrap());
        assert_eq!(store.get("10.0.0.2").unwrap(), None);
    }

    #[test]
    fn keys_cannot_escape_or_touch_the_lock() {
        let root = tempfile::tempdir().unwrap();
        let mut store = DirStore::open_locked(root.path(), "mynet", options()).unwrap();
        for key in ["lock", "../escape", "/etc/passwd", "..", ".hidden", ""] {
            assert!(
                store.compare_and_swap(key, None, Some("x")).is_err(),
                "{key}"
            );
            assert!(store.get(key).is_err(), "{key}");
        }
        assert!(!root.path().join("escape").exists());
        assert!(DirStore::open_locked(root.path(), "../up", options()).is_err());
    }

    #[test]
    fn a_dead_writers_temporary_file_is_removed_under_the_lock() {
        let root = tempfile::tempdir().unwrap();
        drop(DirStore::open_locked(root.path(), "mynet", options()).unwrap());
        std::fs::write(
            root.path().join("mynet/.multus-wasm.10.0.0.2.4242.tmp"),
            "half",
        )
        .unwrap();
        // Someone else's temporary file in a shared directory is theirs.
        std::fs::write(root.path().join("mynet/.editor-swap.tmp"), "x").unwrap();
        let mut store = DirStore::open_locked(root.path(), "mynet", options()).unwrap();
        assert!(
            !root
                .path()
                .join("mynet/.multus-wasm.10.0.0.2.4242.tmp")
                .exists()
        );
        assert!(root.path().join("mynet/.editor-swap.tmp").exists());
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn a_held_lock_times_out_at_the_deadline_naming_the_network() {
        let root = tempfile::tempdir().unwrap();
        let _holder = DirStore::open_locked(root.path(), "mynet", options()).unwrap();
        let started = std::time::Instant::now();
        let err = DirStore::open_locked(
            root.path(),
            "mynet",
            StoreOptions {
                lock_deadline: started + std::time::Duration::from_millis(100),
                max_keys: DEFAULT_MAX_KEYS,
            },
        )
        .unwrap_err();
        assert!(started.elapsed() >= std::time::Duration::from_millis(100));
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        assert!(
            err.to_string().contains("network mynet's IPAM store"),
            "{err}"
        );
    }

    #[test]
    fn the_key_cap_holds_across_opens() {
        let root = tempfile::tempdir().unwrap();
        let capped = || StoreOptions {
            max_keys: 3,
            ..options()
        };
        let mut store = DirStore::open_locked(root.path(), "mynet", capped()).unwrap();
        for key in ["a", "b", "c"] {
            assert!(store.compare_and_swap(key, None, Some("v")).unwrap());
        }
        let err = store.compare_and_swap("d", None, Some("v")).unwrap_err();
        assert!(err.contains("storeMaxKeys"), "{err}");
        // Replacing and deleting still work; a delete frees a slot.
        assert!(store.compare_and_swap("a", Some("v"), Some("w")).unwrap());
        assert!(store.delete("b").unwrap());
        assert!(store.compare_and_swap("d", None, Some("v")).unwrap());
        drop(store);
        let mut reopened = DirStore::open_locked(root.path(), "mynet", capped()).unwrap();
        assert!(reopened.compare_and_swap("e", None, Some("v")).is_err());
        assert_eq!(reopened.list().unwrap(), vec!["a", "c", "d"]);
    }

    #[test]
    fn the_lock_excludes_a_second_opener_until_dropped() {
        let root = tempfile::tempdir().unwrap();
        let store = DirStore::open_locked(root.path(), "mynet", options()).unwrap();
        let lock_path = root.path().join("mynet/lock");
        let other = std::fs::File::open(&lock_path).unwrap();
        let busy = rustix::fs::flock(&other, rustix::fs::FlockOperation::NonBlockingLockExclusive);
        assert!(busy.is_err(), "the lock should be held");
        drop(store);
        rustix::fs::flock(&other, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    }
}

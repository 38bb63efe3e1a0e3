//! The per-container attachment cache: what DEL, CHECK and GC run from.
//!
//! `<cniDir>/multus-wasm/<containerID>.json` records every attachment of a
//! pod (the delegate config exactly as it will be run, its interface name,
//! the CNI_ARGS and runtimeConfig it gets, and its result once known). It is
//! written atomically before the first delegate runs and again as each
//! attachment completes, so DEL can clean up after an ADD that was killed
//! half way, after the NAD is deleted, or with the API server gone.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::cni::{CniResult, CniVersion};

pub const KIND: &str = "multusWasmCacheV1";

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The cache directory or file could not be written or removed.
    #[error("attachment cache {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file exists but does not parse (corrupt, foreign).
    #[error("attachment cache {path} is unreadable: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

impl From<CacheError> for crate::cni::CniError {
    fn from(err: CacheError) -> Self {
        crate::cni::CniError::io_failure(err.to_string())
    }
}

/// Where an attachment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachmentState {
    /// About to be added, or being added: DEL must still clean it up.
    Pending,
    /// Added; `result` holds its result.
    Added,
}

/// One attachment as it is (or will be) run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedAttachment {
    /// `<namespace>/<nad>`, or the cluster network's name.
    pub name: String,
    pub ifname: String,
    pub is_master: bool,
    /// Written by the operator rather than chosen by the pod (see
    /// `DelegateSpec::operator`). Records written before this field existed
    /// read as the operator's only for the master attachment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<bool>,
    /// The delegate config (single or conflist) exactly as run.
    pub config: Value,
    /// CNI_ARGS this attachment's plugins get.
    pub cni_args: Vec<(String, String)>,
    /// The runtimeConfig values offered to its plugins.
    pub capability_args: Map<String, Value>,
    pub state: AttachmentState,
    /// The attachment's result (the config's version), once added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// What its wasm plugins keep for it (ABI 0.2.0 plan `state`), by the
    /// plugin's index in its config; removed with the record.
    #[serde(default, skip_serializing_if = "no_plugin_state")]
    pub plugin_state: PluginStates,
}

/// Per-plugin state of one attachment, by plugin index: written by the
/// runner as each plugin's ADD succeeds, saved with the record.
pub type PluginStates = std::cell::RefCell<std::collections::BTreeMap<usize, String>>;

fn no_plugin_state(states: &PluginStates) -> bool {
    states.borrow().is_empty()
}

impl CachedAttachment {
    /// Whether the operator wrote this attachment's config.
    pub fn is_operator(&self) -> bool {
        self.operator.unwrap_or(self.is_master)
    }

    /// The cached result, parsed.
    pub fn parsed_result(&self) -> Option<CniResult> {
        let value = self.result.as_ref()?;
        CniResult::from_value(value, CniVersion::V1_1_0).ok()
    }
}

/// One pod's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecord {
    pub kind: String,
    pub container_id: String,
    pub netns: String,
    /// The runtime's CNI_IFNAME (the cluster network's interface).
    pub ifname: String,
    #[serde(default)]
    pub pod_namespace: String,
    #[serde(default)]
    pub pod_name: String,
    #[serde(default)]
    pub pod_uid: String,
    pub attachments: Vec<CachedAttachment>,
}

impl ContainerRecord {
    pub fn new(container_id: &str, netns: &str, ifname: &str) -> Self {
        ContainerRecord {
            kind: KIND.into(),
            container_id: container_id.into(),
            netns: netns.into(),
            ifname: ifname.into(),
            pod_namespace: String::new(),
            pod_name: String::new(),
            pod_uid: String::new(),
            attachments: Vec::new(),
        }
    }
}

/// Where a call keeps its attachment records: the seam between the
/// meta-plugin's transaction and the files (a fake in unit tests).
pub trait CacheStore: Send + Sync {
    /// The record of `container_id`; `Ok(None)` when there is none.
    fn load(&self, container_id: &str) -> Result<Option<ContainerRecord>, CacheError>;
    /// Write `record` atomically (it must survive the process being killed).
    fn save_progress(&self, record: &ContainerRecord) -> Result<(), CacheError>;
    /// Write `record` atomically and durably (the ADD's last write).
    fn save(&self, record: &ContainerRecord) -> Result<(), CacheError>;
    /// Remove the record (absent is fine).
    fn remove(&self, container_id: &str) -> Result<(), CacheError>;
    /// Every container id with a record.
    fn container_ids(&self) -> Result<Vec<String>, CacheError>;
}

impl CacheStore for AttachmentCache {
    fn load(&self, container_id: &str) -> Result<Option<ContainerRecord>, CacheError> {
        AttachmentCache::load(self, container_id)
    }
    fn save_progress(&self, record: &ContainerRecord) -> Result<(), CacheError> {
        AttachmentCache::save_progress(self, record)
    }
    fn save(&self, record: &ContainerRecord) -> Result<(), CacheError> {
        AttachmentCache::save(self, record)
    }
    fn remove(&self, container_id: &str) -> Result<(), CacheError> {
        AttachmentCache::remove(self, container_id)
    }
    fn container_ids(&self) -> Result<Vec<String>, CacheError> {
        AttachmentCache::container_ids(self)
    }
}

/// The cache directory (`<cniDir>/multus-wasm`).
#[derive(Debug, Clone)]
pub struct AttachmentCache {
    dir: PathBuf,
}

impl AttachmentCache {
    pub fn new(cni_dir: &Path) -> Self {
        AttachmentCache {
            dir: cni_dir.join("multus-wasm"),
        }
    }

    pub fn path(&self, container_id: &str) -> PathBuf {
        self.dir.join(format!("{container_id}.json"))
    }

    /// Write the ADD's final `record` atomically (0600, in a 0700
    /// directory).
    ///
    /// Not fsynced, like every write of the ADD: a record must survive the
    /// process being killed (the page cache holds it), not a power loss,
    /// after which the pod's namespace and links are gone too and the IPAM
    /// reservations (which the reference host-local does not fsync either)
    /// are released by CNI GC. The fsync cost more than the rest of a
    /// daemon's ADD together (3 ms of 10 on this kind of disk).
    pub fn save(&self, record: &ContainerRecord) -> Result<(), CacheError> {
        self.write(record)
    }

    /// Write a `record` of an ADD under way, atomically.
    pub fn save_progress(&self, record: &ContainerRecord) -> Result<(), CacheError> {
        self.write(record)
    }

    fn write(&self, record: &ContainerRecord) -> Result<(), CacheError> {
        let _span = crate::timing::span("cache-write");
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|source| CacheError::Io {
                path: self.dir.clone(),
                source,
            })?;
        let path = self.path(&record.container_id);
        let bytes = serde_json::to_vec_pretty(record).map_err(|err| CacheError::Corrupt {
            path: path.clone(),
            reason: err.to_string(),
        })?;
        super::write_replacing(&path, &bytes, 0o600, false)
            .map_err(|source| CacheError::Io { path, source })
    }

    /// The record of `container_id`; `Ok(None)` when there is none.
    pub fn load(&self, container_id: &str) -> Result<Option<ContainerRecord>, CacheError> {
        let path = self.path(container_id);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CacheError::Io { path, source }),
        };
        let record: ContainerRecord =
            serde_json::from_slice(&bytes).map_err(|err| CacheError::Corrupt {
                path: path.clone(),
                reason: err.to_string(),
            })?;
        if record.kind != KIND || record.container_id != container_id {
            return Err(CacheError::Corrupt {
                path,
                reason: format!(
                    "kind {:?} for container {:?}",
                    record.kind, record.container_id
                ),
            });
        }
        Ok(Some(record))
    }

    /// Remove the record of `container_id` (absent is fine), and any
    /// temporary file a killed writer of it left behind.
    pub fn remove(&self, container_id: &str) -> Result<(), CacheError> {
        let _span = crate::timing::span("cache-write");
        let prefix = format!(".{container_id}.json.");
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix) && name.ends_with(".tmp") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let path = self.path(container_id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(CacheError::Io { path, source }),
        }
    }

    /// Every container id with a record (for GC).
    pub fn container_ids(&self) -> Result<Vec<String>, CacheError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(CacheError::Io {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut ids: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    return None;
                }
                name.strip_suffix(".json").map(str::to_owned)
            })
            .collect();
        ids.sort();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ContainerRecord {
        let mut record = ContainerRecord::new("abc123", "/var/run/netns/pod", "eth0");
        record.attachments.push(CachedAttachment {
            name: "default/macvlan-conf".into(),
            ifname: "net1".into(),
            is_master: false,
            operator: Some(false),
            config: serde_json::json!({"cniVersion":"0.3.0","name":"macvlan-conf","type":"macvlan","master":"ens3"}),
            cni_args: vec![("IgnoreUnknown".into(), "true".into())],
            capability_args: Map::new(),
            state: AttachmentState::Pending,
            result: None,
            plugin_state: Default::default(),
        });
        record.attachments[0]
            .plugin_state
            .borrow_mut()
            .insert(1, r#"{"mtu":1500}"#.into());
        record
    }

    #[test]
    fn records_round_trip_and_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache = AttachmentCache::new(dir.path());
        assert!(cache.load("abc123").unwrap().is_none());
        cache.save(&record()).unwrap();
        assert_eq!(cache.load("abc123").unwrap(), Some(record()));
        let text: Value =
            serde_json::from_str(&std::fs::read_to_string(cache.path("abc123")).unwrap()).unwrap();
        assert_eq!(
            text["attachments"][0]["pluginState"],
            serde_json::json!({"1": r#"{"mtu":1500}"#}),
            "{text}"
        );
        let mode = std::fs::metadata(cache.path("abc123"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(cache.container_ids().unwrap(), vec!["abc123".to_string()]);
        std::fs::write(dir.path().join("multus-wasm/.abc123.json.999.tmp"), "half").unwrap();
        cache.remove("abc123").unwrap();
        cache.remove("abc123").unwrap();
        assert!(!dir.path().join("multus-wasm/.abc123.json.999.tmp").exists());
        assert!(cache.container_ids().unwrap().is_empty());
    }

    #[test]
    fn a_corrupt_record_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let cache = AttachmentCache::new(dir.path());
        cache.save(&record()).unwrap();
        std::fs::write(cache.path("abc123"), b"{\"kind\":").unwrap();
        assert!(matches!(
            cache.load("abc123"),
            Err(CacheError::Corrupt { .. })
        ));
    }
}

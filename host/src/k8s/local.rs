//! A directory of manifests standing in for the API server: YAML (or JSON)
//! files holding Pods and NetworkAttachmentDefinitions, several documents per
//! file allowed. The network-status of a pod is written next to its
//! manifest, as `<manifest stem>.network-status.json`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{NadInfo, NetworkSource, PodInfo, SourceError};

#[derive(Debug, Deserialize)]
struct Metadata {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    kind: String,
    metadata: Metadata,
    #[serde(default)]
    spec: Option<serde_yaml::Value>,
}

#[derive(Debug)]
enum Object {
    Pod(PodInfo),
    Nad(NadInfo),
}

/// The manifests of one directory.
#[derive(Debug, Clone)]
pub struct LocalSource {
    dir: PathBuf,
}

impl LocalSource {
    pub fn new(dir: &Path) -> Self {
        LocalSource { dir: dir.into() }
    }

    /// Every Pod and NAD in the directory, with the file each came from.
    fn objects(&self) -> Result<Vec<(PathBuf, Object)>, SourceError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => {
                return Err(SourceError::Manifest {
                    path: self.dir.display().to_string(),
                    reason: err.to_string(),
                });
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| {
                matches!(
                    path.extension().and_then(|ext| ext.to_str()),
                    Some("yaml" | "yml" | "json")
                ) && !path.to_string_lossy().ends_with(".network-status.json")
            })
            .collect();
        paths.sort();
        let mut objects = Vec::new();
        for path in paths {
            let bad = |reason: String| SourceError::Manifest {
                path: path.display().to_string(),
                reason,
            };
            let text = std::fs::read_to_string(&path).map_err(|err| bad(err.to_string()))?;
            for document in serde_yaml::Deserializer::from_str(&text) {
                let value =
                    serde_yaml::Value::deserialize(document).map_err(|err| bad(err.to_string()))?;
                if value.is_null() {
                    continue;
                }
                let manifest: Manifest =
                    serde_yaml::from_value(value).map_err(|err| bad(err.to_string()))?;
                let namespace = manifest
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into());
                match manifest.kind.as_str() {
                    "Pod" => objects.push((
                        path.clone(),
                        Object::Pod(PodInfo {
                            namespace,
                            name: manifest.metadata.name,
                            uid: manifest.metadata.uid.unwrap_or_default(),
                            annotations: manifest.metadata.annotations,
                        }),
                    )),
                    "NetworkAttachmentDefinition" => {
                        let config =
                            match manifest.spec.as_ref().and_then(|spec| spec.get("config")) {
                                None | Some(serde_yaml::Value::Null) => None,
                                Some(serde_yaml::Value::String(config)) => Some(config.clone()),
                                Some(other) => {
                                    return Err(bad(format!(
                                        "spec.config must be a string, got {other:?}"
                                    )));
                                }
                            };
                        objects.push((
                            path.clone(),
                            Object::Nad(NadInfo {
                                namespace,
                                name: manifest.metadata.name,
                                config,
                                resource_name: manifest
                                    .metadata
                                    .annotations
                                    .get(crate::devices::RESOURCE_NAME_ANNOTATION)
                                    .filter(|resource| !resource.is_empty())
                                    .cloned(),
                            }),
                        ));
                    }
                    _ => {}
                }
            }
        }
        Ok(objects)
    }

    fn find_pod(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<(PathBuf, PodInfo)>, SourceError> {
        Ok(self
            .objects()?
            .into_iter()
            .find_map(|(path, object)| match object {
                Object::Pod(pod) if pod.namespace == namespace && pod.name == name => {
                    Some((path, pod))
                }
                _ => None,
            }))
    }

    /// Where the network-status of the pod from `manifest` is written.
    pub fn status_path(manifest: &Path) -> PathBuf {
        let stem = manifest
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default();
        manifest.with_file_name(format!("{stem}.network-status.json"))
    }
}

impl NetworkSource for LocalSource {
    fn get_pod(
        &self,
        namespace: &str,
        name: &str,
        _uid: &str,
    ) -> Result<Option<PodInfo>, SourceError> {
        Ok(self.find_pod(namespace, name)?.map(|(_, pod)| pod))
    }

    fn get_nad(&self, namespace: &str, name: &str) -> Result<Option<NadInfo>, SourceError> {
        Ok(self
            .objects()?
            .into_iter()
            .find_map(|(_, object)| match object {
                Object::Nad(nad) if nad.namespace == namespace && nad.name == name => Some(nad),
                _ => None,
            }))
    }

    fn set_network_status(
        &self,
        namespace: &str,
        name: &str,
        status: &str,
    ) -> Result<(), SourceError> {
        let Some((manifest, _)) = self.find_pod(namespace, name)? else {
            tracing::info!(
                namespace,
                name,
                "no pod manifest: network-status not written"
            );
            return Ok(());
        };
        let path = Self::status_path(&manifest);
        crate::store::write_atomically(&path, status.as_bytes(), 0o644).map_err(|err| {
            SourceError::Manifest {
                path: path.display().to_string(),
                reason: err.to_string(),
            }
        })
    }

    fn missing_pod_was_deleted(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAD: &str = r#"apiVersion: "k8s.cni.cncf.io/v1"
kind: NetworkAttachmentDefinition
metadata:
  name: macvlan-conf
spec:
  config: '{ "cniVersion": "0.3.0", "type": "macvlan", "master": "ens3" }'
"#;

    const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: samplepod
  namespace: default
  annotations:
    k8s.v1.cni.cncf.io/networks: macvlan-conf
spec:
  containers: []
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: unrelated
"#;

    #[test]
    fn finds_pods_and_nads_and_writes_status_beside_the_pod() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nad.yaml"), NAD).unwrap();
        std::fs::write(dir.path().join("pod.yaml"), POD).unwrap();
        let source = LocalSource::new(dir.path());
        let nad = source.get_nad("default", "macvlan-conf").unwrap().unwrap();
        assert!(nad.config.unwrap().contains("macvlan"));
        assert!(source.get_nad("other", "macvlan-conf").unwrap().is_none());
        let pod = source.get_pod("default", "samplepod", "").unwrap().unwrap();
        assert_eq!(
            pod.annotations["k8s.v1.cni.cncf.io/networks"],
            "macvlan-conf"
        );
        source
            .set_network_status("default", "samplepod", "[]")
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("pod.network-status.json")).unwrap(),
            "[]"
        );
        // The status file is not read back as a manifest.
        assert!(
            source
                .get_pod("default", "samplepod", "")
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn a_missing_directory_has_no_objects_and_a_bad_file_is_named() {
        let source = LocalSource::new(Path::new("/nonexistent/manifests"));
        assert!(source.get_pod("default", "x", "").unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.yaml"), "kind: [").unwrap();
        let err = LocalSource::new(dir.path())
            .get_pod("default", "x", "")
            .unwrap_err();
        assert!(err.to_string().contains("bad.yaml"), "{err}");
    }
}

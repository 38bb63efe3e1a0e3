//! Device-plugin devices for attachments, as Multus hands them out.
//!
//! A NAD annotated `k8s.v1.cni.cncf.io/resourceName: <resource>` (SR-IOV,
//! host-device pools) needs one of the devices kubelet's device plugin
//! allocated to the pod for that resource. The pod's device IDs per
//! resource (from kubelet's pod-resources API) are handed out in sorted
//! order, one per attachment of that resource, in attachment order; the
//! chosen ID goes into the delegate's config as `deviceID` and `pciBusID`
//! (into every plugin of a conflist) and, for plugins that declare the
//! capability, into `runtimeConfig.deviceID`. The NPWG device-info files
//! a device plugin wrote (`dp/`) are copied for the delegate (`cni/`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::attachments::DelegateSpec;

/// The NAD annotation naming the device-plugin resource a network needs.
pub const RESOURCE_NAME_ANNOTATION: &str = "k8s.v1.cni.cncf.io/resourceName";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "network {network} needs a device of resource {resource} (its NAD's {RESOURCE_NAME_ANNOTATION}), \
         but kubelet allocated none to pod {pod}: request {resource} in one of the pod's containers \
         (resources.limits)"
    )]
    NoDevice {
        network: String,
        resource: String,
        pod: String,
    },
    #[error(
        "network {network} needs a device of resource {resource} (its NAD's {RESOURCE_NAME_ANNOTATION}), \
         but pod {pod} was allocated {allocated} and asks for more networks of that resource: \
         request one {resource} per network"
    )]
    TooFew {
        network: String,
        resource: String,
        pod: String,
        allocated: usize,
    },
}

impl DeviceError {
    /// CNI code 7: the pod's networks ask for what it was not given.
    pub fn cni_code(&self) -> u32 {
        7
    }
}

/// Give each spec with a `resource_name` the next of the pod's devices of
/// that resource (`allocated`: device IDs by resource, each list sorted),
/// writing it into the spec and its config. A device ID the pod's
/// annotation asked for is replaced, as in Multus: the device plugin's
/// allocation wins.
pub fn assign_device_ids(
    specs: &mut [DelegateSpec],
    allocated: &BTreeMap<String, Vec<String>>,
    pod: &str,
) -> Result<(), DeviceError> {
    let mut next: BTreeMap<String, usize> = BTreeMap::new();
    for spec in specs.iter_mut() {
        let Some(resource) = spec.resource_name.clone() else {
            continue;
        };
        let ids = allocated.get(&resource).map(Vec::as_slice).unwrap_or(&[]);
        let index = next.entry(resource.clone()).or_default();
        let Some(id) = ids.get(*index) else {
            return Err(if ids.is_empty() {
                DeviceError::NoDevice {
                    network: spec.name.clone(),
                    resource,
                    pod: pod.into(),
                }
            } else {
                DeviceError::TooFew {
                    network: spec.name.clone(),
                    resource,
                    pod: pod.into(),
                    allocated: ids.len(),
                }
            });
        };
        *index += 1;
        inject_device_id(&mut spec.config, id);
        spec.device_id = Some(id.clone());
    }
    Ok(())
}

/// `deviceID` and `pciBusID` at the top of a config, or of every plugin of
/// a conflist.
pub fn inject_device_id(config: &mut Value, device_id: &str) {
    let set = |object: &mut Value| {
        if let Some(object) = object.as_object_mut() {
            object.insert("deviceID".into(), device_id.into());
            object.insert("pciBusID".into(), device_id.into());
        }
    };
    match config.get_mut("plugins").and_then(Value::as_array_mut) {
        Some(plugins) => plugins.iter_mut().for_each(set),
        None => set(config),
    }
}

/// A name for one file of the device-info dirs: `/` becomes `-`, so a
/// name from a NAD or an annotation never leaves its directory.
fn file_name(name: &str) -> String {
    name.replace('/', "-")
}

/// The device-info file a device plugin writes for `device_id` of
/// `resource`: `<dir>/dp/<resource>-<device_id>-device.json`.
pub fn dp_device_info_file(dir: &Path, resource: &str, device_id: &str) -> PathBuf {
    dir.join("dp")
        .join(file_name(&format!("{resource}-{device_id}-device.json")))
}

/// The device-info file of one attachment for its delegate
/// (`runtimeConfig.CNIDeviceInfoFile`):
/// `<dir>/cni/<network>-<container_id>_<ifname>`.
pub fn cni_device_info_file(
    dir: &Path,
    network: &str,
    container_id: &str,
    ifname: &str,
) -> PathBuf {
    dir.join("cni")
        .join(file_name(&format!("{network}-{container_id}_{ifname}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(name: &str, resource: Option<&str>, config: Value) -> DelegateSpec {
        let mut spec = DelegateSpec::cluster_network(name, config);
        spec.is_master = false;
        spec.resource_name = resource.map(str::to_owned);
        spec
    }

    #[test]
    fn each_network_of_a_resource_takes_the_next_device_in_order() {
        let allocated = BTreeMap::from([(
            "intel.com/sriov".to_string(),
            vec!["0000:03:00.1".to_string(), "0000:03:00.2".to_string()],
        )]);
        let mut specs = vec![
            spec("default/macvlan", None, json!({"type": "macvlan"})),
            spec(
                "default/sriov-a",
                Some("intel.com/sriov"),
                json!({"type": "sriov"}),
            ),
            spec(
                "default/sriov-b",
                Some("intel.com/sriov"),
                json!({"plugins": [{"type": "sriov"}, {"type": "tuning"}]}),
            ),
        ];
        specs[1].device_id = Some("asked-for".into());
        assign_device_ids(&mut specs, &allocated, "default/web").unwrap();
        assert_eq!(specs[0].device_id, None);
        assert_eq!(specs[0].config, json!({"type": "macvlan"}));
        assert_eq!(specs[1].device_id.as_deref(), Some("0000:03:00.1"));
        assert_eq!(
            specs[1].config,
            json!({"type": "sriov", "deviceID": "0000:03:00.1", "pciBusID": "0000:03:00.1"})
        );
        assert_eq!(specs[2].device_id.as_deref(), Some("0000:03:00.2"));
        for plugin in specs[2].config["plugins"].as_array().unwrap() {
            assert_eq!(plugin["deviceID"], "0000:03:00.2");
            assert_eq!(plugin["pciBusID"], "0000:03:00.2");
        }
    }

    #[test]
    fn a_pod_without_its_devices_is_told_what_to_request() {
        let mut specs = vec![spec(
            "default/sriov",
            Some("intel.com/sriov"),
            json!({"type": "sriov"}),
        )];
        let error = assign_device_ids(&mut specs, &BTreeMap::new(), "default/web").unwrap_err();
        assert_eq!(error.cni_code(), 7);
        let message = error.to_string();
        for part in [
            "default/sriov",
            "intel.com/sriov",
            "default/web",
            "resources.limits",
        ] {
            assert!(message.contains(part), "{message}");
        }
        let one = BTreeMap::from([(
            "intel.com/sriov".to_string(),
            vec!["0000:03:00.1".to_string()],
        )]);
        let mut two = vec![
            spec(
                "default/a",
                Some("intel.com/sriov"),
                json!({"type": "sriov"}),
            ),
            spec(
                "default/b",
                Some("intel.com/sriov"),
                json!({"type": "sriov"}),
            ),
        ];
        let error = assign_device_ids(&mut two, &one, "default/web").unwrap_err();
        assert!(
            matches!(error, DeviceError::TooFew { allocated: 1, ref network, .. } if network == "default/b"),
            "{error:?}"
        );
    }

    #[test]
    fn device_info_files_stay_in_their_directories() {
        let dir = Path::new("/var/run/k8s.cni.cncf.io/devinfo");
        assert_eq!(
            dp_device_info_file(dir, "intel.com/sriov", "0000:03:00.1"),
            dir.join("dp/intel.com-sriov-0000:03:00.1-device.json")
        );
        assert_eq!(
            cni_device_info_file(dir, "default/sriov-net", "abc", "net1"),
            dir.join("cni/default-sriov-net-abc_net1")
        );
        // A hostile resource name cannot climb out.
        let hostile = dp_device_info_file(dir, "../../../etc/x", "1");
        assert_eq!(hostile.parent(), Some(dir.join("dp").as_path()));
    }
}

//! NPWG device-info files (`deviceInfoDir`, default
//! `/var/run/k8s.cni.cncf.io/devinfo`): a device plugin describes the device
//! it allocated in `dp/<resource>-<device>-device.json`; before the
//! attachment's delegate runs, that description is copied to the
//! attachment's own file in `cni/` (the delegate's
//! `runtimeConfig.CNIDeviceInfoFile`, which it may also write itself), whose
//! content goes into network-status as `device-info`. The attachment's file
//! is removed on DEL and when the ADD fails.
//!
//! Every file is read bounded, non-blocking, without following a final
//! symlink, and must be a regular file holding a JSON object: the names
//! come from a NAD (the resource) and a pod annotation (the interface), and
//! `/` in them never leaves the directory ([`crate::devices`]).

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::devices::{cni_device_info_file, dp_device_info_file};

/// The largest device-info file read (the spec's are a few hundred bytes).
pub const MAX_DEVICE_INFO_BYTES: u64 = 64 << 10;

/// Read a device-info file: `None` when it does not exist; an error when
/// it is not a regular file with a JSON object of at most
/// [`MAX_DEVICE_INFO_BYTES`].
pub fn read(path: &Path) -> Result<Option<Value>, String> {
    let flags = rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOFOLLOW;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
    {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(format!("{}: {err}", path.display())),
    };
    let metadata = file
        .metadata()
        .map_err(|err| format!("{}: {err}", path.display()))?;
    if !metadata.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_DEVICE_INFO_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("{}: {err}", path.display()))?;
    if bytes.len() as u64 > MAX_DEVICE_INFO_BYTES {
        return Err(format!(
            "{} is over {MAX_DEVICE_INFO_BYTES} bytes",
            path.display()
        ));
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(value) if value.is_object() => Ok(Some(value)),
        Ok(_) => Err(format!("{} does not hold a JSON object", path.display())),
        Err(err) => Err(format!("{} is not JSON: {err}", path.display())),
    }
}

/// The device-info files of one ADD's attachments, removed when dropped
/// unless [`DeviceInfoFiles::keep`] was called (the ADD succeeded).
#[derive(Debug, Default)]
pub struct DeviceInfoFiles {
    paths: Vec<PathBuf>,
    keep: bool,
}

impl DeviceInfoFiles {
    /// Copy the device plugin's description of `device_id` (of `resource`)
    /// to the attachment's file, when the device plugin wrote one; returns
    /// the attachment's file either way (a delegate may write it itself).
    /// A description that cannot be read is logged, not fatal (as Multus).
    pub fn copy_from_device_plugin(
        &mut self,
        dir: &Path,
        resource: &str,
        device_id: &str,
        attachment: (&str, &str, &str),
    ) -> PathBuf {
        let (network, container_id, ifname) = attachment;
        let target = cni_device_info_file(dir, network, container_id, ifname);
        let source = dp_device_info_file(dir, resource, device_id);
        match read(&source) {
            Ok(Some(info)) => {
                let written = target
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| {
                        super::write_atomically(
                            &target,
                            &serde_json::to_vec(&info).expect("json"),
                            0o444,
                        )
                    });
                if let Err(err) = written {
                    tracing::warn!(file = %target.display(), error = %err, "writing the attachment's device info failed")
                }
            }
            Ok(None) => {
                tracing::debug!(file = %source.display(), "no device info from the device plugin")
            }
            Err(err) => tracing::warn!(error = %err, "the device plugin's device info is unusable"),
        }
        // Removed if the ADD fails, whoever wrote it (we, or the delegate).
        self.paths.push(target.clone());
        target
    }

    /// The ADD succeeded: the files stay until DEL.
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for DeviceInfoFiles {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for path in &self.paths {
            remove(path);
        }
    }
}

/// Remove an attachment's device-info file (DEL; a missing file is fine).
pub fn remove(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::debug!(file = %path.display(), "device info removed"),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            tracing::warn!(file = %path.display(), error = %err, "removing device info failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_plugins_info_is_copied_for_the_attachment_and_removed_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let dp = dir.path().join("dp");
        std::fs::create_dir_all(&dp).unwrap();
        let info = serde_json::json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:03:00.1"}});
        std::fs::write(
            dp.join("intel.com-sriov-0000:03:00.1-device.json"),
            info.to_string(),
        )
        .unwrap();
        let mut files = DeviceInfoFiles::default();
        let target = files.copy_from_device_plugin(
            dir.path(),
            "intel.com/sriov",
            "0000:03:00.1",
            ("default/sriov-net", "abc", "net1"),
        );
        assert_eq!(target, dir.path().join("cni/default-sriov-net-abc_net1"));
        assert_eq!(read(&target).unwrap(), Some(info));
        drop(files);
        assert!(!target.exists(), "a failed ADD leaves no device info");

        let mut files = DeviceInfoFiles::default();
        let target = files.copy_from_device_plugin(
            dir.path(),
            "intel.com/sriov",
            "0000:03:00.1",
            ("default/sriov-net", "abc", "net1"),
        );
        files.keep();
        assert!(target.exists());
    }

    #[test]
    fn device_info_that_is_not_a_bounded_regular_json_object_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(&dir.path().join("missing")).unwrap(), None);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
        assert!(read(&link).is_err(), "a symlink is not followed");
        assert!(read(Path::new("/dev/zero")).is_err());
        let list = dir.path().join("list");
        std::fs::write(&list, "[1]").unwrap();
        assert!(read(&list).is_err());
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b' '; MAX_DEVICE_INFO_BYTES as usize + 10]).unwrap();
        assert!(read(&big).is_err());
    }
}

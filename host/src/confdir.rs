//! CNI config directories: the one place that lists and reads them. A
//! directory's configs are its `.conf`, `.conflist` and `.json` files, in
//! name order (libcni's order): the NAD fallback looks a network up by name
//! there, a `clusterNetwork` path takes the first, and `install` picks the
//! primary from them.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::attachments::{self, AttachError, CONF_FILE_EXTENSIONS, ConfFile};

/// The config files of `dir`, sorted by name (regular files only).
pub fn config_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let extension = path.extension().and_then(|extension| extension.to_str());
        if extension.is_some_and(|extension| CONF_FILE_EXTENSIONS.contains(&extension))
            && path.is_file()
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The delegate config of NAD `nad_name`: its `spec.config` when not blank,
/// else the first config of `conf_dir` with that `name` (a missing
/// directory is an empty one).
pub fn nad_config(
    nad_name: &str,
    spec_config: Option<&str>,
    conf_dir: &Path,
) -> Result<Value, AttachError> {
    if let Some(text) = spec_config.filter(|text| !text.trim().is_empty()) {
        return attachments::config_from_spec(nad_name, text);
    }
    let paths = match config_files(conf_dir) {
        Ok(paths) => paths,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(AttachError::ConfDirRead {
                path: conf_dir.to_path_buf(),
                source,
            });
        }
    };
    let files = paths
        .into_iter()
        .map(|path| ConfFile {
            bytes: std::fs::read(&path),
            path,
        })
        .collect();
    attachments::config_from_conf_files(nad_name, conf_dir, files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(dir: &tempfile::TempDir, name: &str, contents: &str) {
        std::fs::write(dir.path().join(name), contents).unwrap();
    }

    #[test]
    fn nad_config_falls_back_to_conf_dir() {
        let conf_dir = tempfile::tempdir().unwrap();
        write(
            &conf_dir,
            "00-other.conf",
            r#"{"name":"other","type":"bridge"}"#,
        );
        write(
            &conf_dir,
            "10-mine.conflist",
            r#"{"name":"mine","plugins":[{"type":"macvlan"}]}"#,
        );
        write(
            &conf_dir,
            "20-mine.conf",
            r#"{"name":"mine","type":"ipvlan"}"#,
        );
        write(
            &conf_dir,
            "05-mine.txt",
            r#"{"name":"mine","type":"ignored"}"#,
        );
        write(
            &conf_dir,
            "30-json.json",
            r#"{"name":"json-net","type":"static"}"#,
        );
        write(
            &conf_dir,
            "40-notype.conf",
            r#"{"name":"notype","plugins":[]}"#,
        );
        write(
            &conf_dir,
            "50-badlist.conflist",
            r#"{"name":"badlist","type":"x"}"#,
        );
        std::fs::create_dir(conf_dir.path().join("60-dir.conf")).expect("dir");

        for spec_config in [None, Some(""), Some("  \n")] {
            let config = nad_config("mine", spec_config, conf_dir.path()).expect("found");
            assert_eq!(
                config,
                json!({"name":"mine","plugins":[{"type":"macvlan"}]}),
                "the sorted-first match wins, for spec.config {spec_config:?}"
            );
        }
        let config = nad_config("json-net", None, conf_dir.path()).expect("found");
        assert_eq!(config, json!({"name":"json-net","type":"static"}));

        let error = nad_config("notype", None, conf_dir.path()).expect_err("no type");
        let path = conf_dir.path().join("40-notype.conf");
        assert_eq!(
            error.to_string(),
            format!(
                "error loading CNI config file {}: no 'type'; perhaps this is a .conflist?",
                path.display()
            )
        );
        assert_eq!(error.cni_code(), 7);

        let error = nad_config("badlist", None, conf_dir.path()).expect_err("no plugins");
        assert!(
            matches!(error, AttachError::ConfListWithoutPlugins { .. }),
            "{error}"
        );

        let error = nad_config("absent", None, conf_dir.path()).expect_err("absent");
        assert_eq!(
            error.to_string(),
            format!(
                "no network available in the name absent in cni dir {}",
                conf_dir.path().display()
            )
        );
        assert_eq!(error.cni_code(), 999);
    }

    #[test]
    fn nad_config_conf_dir_errors() {
        let missing = std::env::temp_dir().join("multus-wasm-attachments-never-created");
        let error = nad_config("mine", None, &missing).expect_err("missing dir");
        assert!(
            matches!(error, AttachError::NoNetworkInConfDir { .. }),
            "{error}"
        );

        let conf_dir = tempfile::tempdir().unwrap();
        write(&conf_dir, "00-broken.conf", r#"{"name":"#);
        write(
            &conf_dir,
            "10-mine.conf",
            r#"{"name":"mine","type":"macvlan"}"#,
        );
        let error = nad_config("mine", None, conf_dir.path()).expect_err("broken file");
        assert!(
            matches!(error, AttachError::ConfFileDecode { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("00-broken.conf"), "{error}");
        assert_eq!(error.cni_code(), 6);
    }
}

//! The manifests in deploy/: every one parses, kinds are the expected ones,
//! the CRD matches upstream's, the role is bound to the DaemonSet's account,
//! the DaemonSet mounts every path the install step and config name, and
//! every object fits the API with the annotation `kubectl apply` adds.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/base")
}

/// Every document of every YAML file in deploy/ (not examples/), as JSON.
fn manifests() -> Vec<(String, Value)> {
    let mut documents = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension().is_some_and(|ext| ext == "yaml")
                && !path.ends_with("kustomization.yaml")
        })
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = Value::deserialize(document)
                .unwrap_or_else(|err| panic!("{} does not parse: {err}", path.display()));
            if !value.is_null() {
                documents.push((
                    path.file_name().unwrap().to_string_lossy().into_owned(),
                    value,
                ));
            }
        }
    }
    documents
}

fn find<'a>(documents: &'a [(String, Value)], kind: &str) -> Vec<&'a Value> {
    documents
        .iter()
        .filter(|(_, value)| value["kind"] == kind)
        .map(|(_, value)| value)
        .collect()
}

#[test]
fn the_manifests_hold_exactly_the_expected_kinds() {
    let documents = manifests();
    let mut kinds: Vec<&str> = documents
        .iter()
        .map(|(_, value)| value["kind"].as_str().unwrap())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "CustomResourceDefinition",
            "DaemonSet",
            "ServiceAccount"
        ]
    );
}

#[test]
fn the_crd_matches_the_upstream_network_attachment_definition() {
    let documents = manifests();
    let crd = find(&documents, "CustomResourceDefinition")[0];
    assert_eq!(crd["apiVersion"], "apiextensions.k8s.io/v1");
    assert_eq!(
        crd["metadata"]["name"],
        "network-attachment-definitions.k8s.cni.cncf.io"
    );
    let spec = &crd["spec"];
    assert_eq!(spec["group"], "k8s.cni.cncf.io");
    assert_eq!(spec["scope"], "Namespaced");
    assert_eq!(spec["names"]["kind"], "NetworkAttachmentDefinition");
    assert_eq!(spec["names"]["plural"], "network-attachment-definitions");
    assert_eq!(spec["names"]["singular"], "network-attachment-definition");
    assert!(
        spec["names"]["shortNames"]
            .as_array()
            .unwrap()
            .iter()
            .any(|name| name == "net-attach-def")
    );
    let versions = spec["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0]["name"], "v1");
    assert_eq!(versions[0]["served"], true);
    assert_eq!(versions[0]["storage"], true);
    let schema = &versions[0]["schema"]["openAPIV3Schema"];
    assert_eq!(schema["type"], "object");
    for field in ["apiVersion", "kind", "metadata", "spec"] {
        assert!(
            schema["properties"].get(field).is_some(),
            "schema lacks {field}"
        );
    }
    assert_eq!(
        schema["properties"]["spec"]["properties"]["config"]["type"],
        "string"
    );
    // The host's own kind (kube-rs) agrees on group, version and plural.
    use kube::Resource;
    type Nad = multus_wasm::k8s::NetworkAttachmentDefinition;
    assert_eq!(Nad::group(&()), "k8s.cni.cncf.io");
    assert_eq!(Nad::version(&()), "v1");
    assert_eq!(Nad::plural(&()), "network-attachment-definitions");
}

#[test]
fn the_cluster_role_is_bound_to_the_daemonsets_service_account() {
    // What the role grants is compared with the requests both modes make
    // in tests/thick.rs (it needs the daemon, so root).
    let documents = manifests();
    let role = find(&documents, "ClusterRole")[0];
    let binding = find(&documents, "ClusterRoleBinding")[0];
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    let account = find(&documents, "ServiceAccount")[0];
    assert_eq!(binding["subjects"][0]["name"], account["metadata"]["name"]);
    assert_eq!(
        binding["subjects"][0]["namespace"],
        account["metadata"]["namespace"]
    );
    let daemonset = find(&documents, "DaemonSet")[0];
    assert_eq!(
        daemonset["spec"]["template"]["spec"]["serviceAccountName"],
        account["metadata"]["name"]
    );
}

/// `--flag=value` arguments of a container command.
fn flags(container: &Value) -> BTreeMap<String, String> {
    container["command"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|arg| arg.as_str()?.strip_prefix("--")?.split_once('='))
        .map(|(flag, value)| (flag.to_string(), value.to_string()))
        .collect()
}

#[test]
fn the_daemonset_mounts_every_path_install_and_the_config_use() {
    let documents = manifests();
    let daemonset = find(&documents, "DaemonSet")[0];
    let pod = &daemonset["spec"]["template"]["spec"];
    let volumes: BTreeMap<&str, &Value> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|volume| (volume["name"].as_str().unwrap(), volume))
        .collect();
    let configmaps: BTreeMap<&str, &Value> = find(&documents, "ConfigMap")
        .into_iter()
        .map(|map| (map["metadata"]["name"].as_str().unwrap(), map))
        .collect();
    let containers: Vec<&Value> = pod["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(pod["containers"].as_array().unwrap())
        .collect();
    assert_eq!(containers.len(), 2);
    for container in containers {
        let flags = flags(container);
        let host_root = &flags["host-root"];
        let mounts: BTreeMap<&str, &str> = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|mount| {
                (
                    mount["mountPath"].as_str().unwrap(),
                    mount["name"].as_str().unwrap(),
                )
            })
            .collect();
        for flag in ["bin-dir", "conf-dir", "state-dir"] {
            let host_path = &flags[flag];
            let mount_path = format!("{host_root}{host_path}");
            let volume = mounts
                .get(mount_path.as_str())
                .unwrap_or_else(|| panic!("--{flag}={host_path} needs a mount at {mount_path}"));
            assert_eq!(
                volumes[volume]["hostPath"]["path"],
                host_path.as_str(),
                "--{flag}"
            );
        }
        let plugin_volume = mounts[flags["plugin-dir"].as_str()];
        assert_eq!(
            volumes[plugin_volume]["projected"]["sources"][0]["configMap"]["name"],
            "multus-wasm-plugins",
            "the plugin dir holds the manifest"
        );
        let template = Path::new(&flags["config-template"]);
        let config_volume = mounts[template.parent().unwrap().to_str().unwrap()];
        let config_map = volumes[config_volume]["configMap"]["name"]
            .as_str()
            .unwrap();
        let file = template.file_name().unwrap().to_str().unwrap();
        let template_json = configmaps[config_map]["data"][file]
            .as_str()
            .expect("the template is in the ConfigMap");
        // The template is a valid piece of host config: no unknown fields.
        let mut config: serde_json::Map<String, Value> =
            serde_json::from_str(template_json).unwrap();
        config.insert("delegates".into(), serde_json::json!([{"type": "ptp"}]));
        let parsed =
            multus_wasm::config::MultusConfig::parse(&serde_json::to_vec(&config).unwrap())
                .unwrap();
        assert!(
            parsed.unknown_fields.is_empty(),
            "{:?}",
            parsed.unknown_fields
        );
    }
}

/// The plugin files the kustomization generates ConfigMaps from, and the
/// built plugin (the profile `cargo xtask plugins` builds) behind each.
const SHIPPED: [(&str, &str); 4] = [
    ("macvlan.wasm", test_artifacts::MACVLAN),
    ("host-local.wasm", test_artifacts::HOST_LOCAL),
    ("static.wasm", test_artifacts::STATIC),
    ("tuning.wasm", test_artifacts::TUNING),
];

#[test]
fn every_plugin_has_its_own_immutable_configmap_mounted_with_the_manifest() {
    let kustomization: Value = serde_yaml::from_str(
        &std::fs::read_to_string(deploy_dir().join("kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let resources: Vec<&str> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for document in ["crd.yaml", "rbac.yaml", "config.yaml", "daemonset.yaml"] {
        assert!(
            resources.contains(&document),
            "kustomization lacks {document}"
        );
    }
    assert_eq!(kustomization["generatorOptions"]["immutable"], true);
    // name -> files of every generated ConfigMap.
    let generated: BTreeMap<&str, Vec<&str>> = kustomization["configMapGenerator"]
        .as_array()
        .unwrap()
        .iter()
        .map(|generator| {
            let files = generator["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|file| file.as_str().unwrap())
                .collect();
            (generator["name"].as_str().unwrap(), files)
        })
        .collect();
    assert_eq!(
        generated["multus-wasm-plugins"],
        vec!["plugins/plugins.json"]
    );
    for (file, _) in SHIPPED {
        let plugin = file.trim_end_matches(".wasm");
        assert_eq!(
            generated
                .get(format!("multus-wasm-plugin-{plugin}").as_str())
                .unwrap_or_else(|| panic!("no ConfigMap for {plugin}: {generated:?}")),
            &vec![format!("plugins/{file}").as_str()],
            "one plugin per ConfigMap"
        );
    }
    assert_eq!(generated.len(), SHIPPED.len() + 1, "{generated:?}");
    // The DaemonSet mounts all of them as one plugin directory.
    let documents = manifests();
    let daemonset = find(&documents, "DaemonSet")[0];
    let volume = daemonset["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|volume| volume["name"] == "plugins")
        .unwrap();
    let mut projected: Vec<&str> = volume["projected"]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|source| source["configMap"]["name"].as_str().unwrap())
        .collect();
    projected.sort();
    assert_eq!(projected, generated.keys().copied().collect::<Vec<_>>());
}

/// The annotation `kubectl apply` (client-side) adds to every object it
/// applies: the object as applied, as compact JSON with a newline.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The API's limits: all annotations of an object together (keys and
/// values), and a ConfigMap's size.
const ANNOTATIONS_LIMIT: usize = 256 * 1024;
const OBJECT_LIMIT: usize = 1 << 20;

#[test]
fn every_rendered_object_fits_the_api_with_the_annotation_kubectl_apply_adds() {
    for overlay in ["", "thick"] {
        for object in render(overlay) {
            let name = format!("{}/{}", object["kind"], object["metadata"]["name"]);
            let applied = serde_json::to_string(&object).unwrap() + "\n";
            let existing: usize = object["metadata"]["annotations"]
                .as_object()
                .map(|annotations| {
                    annotations
                        .iter()
                        .map(|(key, value)| key.len() + value.as_str().unwrap_or("").len())
                        .sum()
                })
                .unwrap_or(0);
            let annotations = existing + LAST_APPLIED.len() + applied.len();
            assert!(
                annotations <= ANNOTATIONS_LIMIT,
                "{overlay:?}: {name} would carry {annotations} bytes of annotations \
                 after kubectl apply (limit {ANNOTATIONS_LIMIT})"
            );
            let mut stored = object.clone();
            stored["metadata"]["annotations"][LAST_APPLIED] = Value::String(applied);
            let size = serde_json::to_vec(&stored).unwrap().len();
            assert!(
                size <= OBJECT_LIMIT,
                "{overlay:?}: {name} is {size} bytes as stored (limit {OBJECT_LIMIT})"
            );
        }
    }
}

/// The manifest `cargo xtask plugins` writes beside the plugins.
fn manifest_for_shipped() -> Value {
    let mut manifest = serde_json::Map::new();
    for (file, built) in SHIPPED {
        manifest.insert(
            file.trim_end_matches(".wasm").to_string(),
            serde_json::json!({
                "file": file,
                "sha256": support::sha256_hex(&std::fs::read(built).unwrap()),
            }),
        );
    }
    Value::Object(manifest)
}

/// deploy/ copied to a scratch dir with the plugin files kustomize's
/// generator needs (the built plugins), rendered with `kubectl kustomize`.
fn render(overlay: &str) -> Vec<Value> {
    let dir = support::scratch();
    let copy = dir.path().join("deploy");
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(deploy_dir().parent().unwrap())
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let plugins = copy.join("base/plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for (file, built) in SHIPPED {
        std::fs::copy(built, plugins.join(file)).unwrap();
    }
    std::fs::write(
        plugins.join("plugins.json"),
        serde_json::to_vec(&manifest_for_shipped()).unwrap(),
    )
    .unwrap();
    let output = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(copy.join(overlay))
        .output()
        .expect("kubectl (with kustomize) is needed for this test");
    assert!(
        output.status.success(),
        "kubectl kustomize {overlay}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_yaml::Deserializer::from_slice(&output.stdout)
        .map(|document| Value::deserialize(document).unwrap())
        .collect()
}

#[test]
fn thin_and_thick_both_render_with_kustomize() {
    for overlay in ["", "thick"] {
        let documents = render(overlay);
        let kinds: Vec<&str> = documents
            .iter()
            .map(|document| document["kind"].as_str().unwrap())
            .collect();
        for kind in ["CustomResourceDefinition", "DaemonSet", "ConfigMap"] {
            assert!(kinds.contains(&kind), "{overlay:?}: {kinds:?}");
        }
        // A rollout, drain or restart must never remove the node's config:
        // no container of either DaemonSet cleans up when it stops.
        for document in documents.iter().filter(|d| d["kind"] == "DaemonSet") {
            let pod = &document["spec"]["template"]["spec"];
            for container in ["initContainers", "containers"]
                .iter()
                .filter_map(|key| pod[*key].as_array())
                .flatten()
            {
                let command = container["command"].to_string();
                for flag in ["--cleanup-on-exit", "--cleanup-config-on-exit"] {
                    assert!(
                        !command.contains(flag),
                        "{overlay:?}: {} runs with {flag}",
                        container["name"]
                    );
                }
            }
        }
    }
}

#[test]
fn the_thick_daemonset_runs_the_daemon_with_what_it_needs() {
    let documents = render("thick");
    let daemonset = documents
        .iter()
        .find(|document| document["kind"] == "DaemonSet")
        .unwrap();
    let pod = &daemonset["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "only the daemon: {containers:?}");
    let daemon = &containers[0];
    let command: Vec<&str> = daemon["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| arg.as_str().unwrap())
        .collect();
    assert_eq!(&command[..2], ["/usr/local/bin/multus-wasm", "daemon"]);
    let daemon_flags = flags(daemon);
    assert_eq!(daemon_flags["config"], "/var/lib/multus-wasm/daemon.conf");
    assert!(command.contains(&"--keep-config"));
    let init = &pod["initContainers"][0];
    assert_eq!(flags(init)["mode"], "thick");
    assert_eq!(flags(init)["socket-dir"], daemon_flags["socket-dir"]);
    // The daemon reaches pod namespaces, the socket, the cache and IPAM
    // state, and the config at the host's own paths.
    let mounts: Vec<&str> = daemon["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|mount| mount["mountPath"].as_str().unwrap())
        .collect();
    for path in [
        "/run/netns",
        "/var/run/netns",
        "/run/multus-wasm",
        "/var/lib/cni",
        "/var/lib/multus-wasm",
        "/etc/cni/net.d",
        "/opt/cni/bin",
    ] {
        assert!(
            mounts.contains(&path),
            "the daemon lacks {path}: {mounts:?}"
        );
    }
    assert_eq!(daemon["readinessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(daemon["env"][0]["name"], "NODE_NAME");
}

#[test]
fn only_the_thick_daemon_is_privileged_and_the_watcher_is_probed_on_its_status() {
    for overlay in ["", "thick"] {
        let documents = render(overlay);
        let daemonset = documents
            .iter()
            .find(|document| document["kind"] == "DaemonSet")
            .unwrap();
        let pod = &daemonset["spec"]["template"]["spec"];
        for container in ["initContainers", "containers"]
            .iter()
            .filter_map(|key| pod[*key].as_array())
            .flatten()
        {
            let name = container["name"].as_str().unwrap();
            let privileged = container["securityContext"]["privileged"] == true;
            assert_eq!(
                privileged,
                overlay == "thick" && name == "daemon",
                "{overlay:?}: {name}"
            );
            if name == "daemon" {
                assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
            }
            if name != "watch" {
                continue;
            }
            // The probes read the status file the watcher writes, on a
            // volume of the pod's own.
            let status_file = &flags(container)["status-file"];
            for (probe, check) in [("livenessProbe", "alive"), ("readinessProbe", "ready")] {
                let command: Vec<&str> = container[probe]["exec"]["command"]
                    .as_array()
                    .unwrap_or_else(|| panic!("the watcher has no {probe}"))
                    .iter()
                    .map(|arg| arg.as_str().unwrap())
                    .collect();
                assert_eq!(&command[..2], ["/usr/local/bin/multus-wasm", "install"]);
                assert!(command.contains(&format!("--check={check}").as_str()));
                assert!(command.contains(&format!("--status-file={status_file}").as_str()));
            }
            let mount = container["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|mount| {
                    status_file.starts_with(&format!("{}/", mount["mountPath"].as_str().unwrap()))
                })
                .expect("the status file is on a mounted volume");
            let volume = pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|volume| volume["name"] == mount["name"])
                .unwrap();
            assert!(volume["emptyDir"].is_object(), "{volume}");
        }
    }
}

#[test]
fn the_image_is_built_from_source_static_and_without_the_build_output_in_its_context() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dockerfile = std::fs::read_to_string(root.join("deploy/Dockerfile")).unwrap();
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|line| line.starts_with("FROM "))
        .collect();
    assert_eq!(
        stages.len(),
        2,
        "a build stage and a runtime stage: {stages:?}"
    );
    assert!(stages[0].ends_with(" AS build"), "{}", stages[0]);
    assert!(
        dockerfile.contains("--target x86_64-unknown-linux-musl")
            && dockerfile.contains("-p multus-wasm -p multus-wasm-shim"),
        "both node binaries are built for musl in the image"
    );
    // The runtime stage has no libc: a dynamically linked binary would not
    // even start there.
    assert!(stages[1].contains("distroless/static"), "{}", stages[1]);
    for binary in ["multus-wasm", "multus-wasm-shim"] {
        assert!(
            dockerfile.contains(&format!(
                "COPY --from=build /out/{binary} /usr/local/bin/{binary}"
            )),
            "{binary} comes from the build stage"
        );
    }
    let ignored = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    for pattern in ["target/", ".git/"] {
        assert!(
            ignored.lines().any(|line| line.trim() == pattern),
            ".dockerignore lacks {pattern}"
        );
    }
}

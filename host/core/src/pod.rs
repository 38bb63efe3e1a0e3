//! What the meta-plugin decides about the pod itself (pure): whether the
//! pod the API returned is the one the runtime is setting up.
//!
//! kubelet passes `K8S_POD_UID`; the API's pod must carry the same UID,
//! except for a static pod: kubelet runs it from a manifest (file or URL)
//! under the manifest's UID, while the API holds its mirror pod, which has
//! a UID of its own. As Multus (`IsStaticPod`), such a pod is recognised by
//! its annotations: `kubernetes.io/config.source` present and not `api`,
//! or `kubernetes.io/config.mirror` present (the mirror pod's mark).

use std::collections::BTreeMap;

/// kubelet's annotation naming where a pod's definition came from
/// (`api`, `file`, `http`).
pub const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
/// The annotation kubelet puts on the mirror pod of a static pod.
pub const CONFIG_MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// `kubernetes.io/config.source` of a pod that came from the API server.
pub const API_SERVER_SOURCE: &str = "api";

/// Whether `annotations` mark a static pod (or its mirror pod).
pub fn is_static_pod(annotations: &BTreeMap<String, String>) -> bool {
    let from_manifest = annotations
        .get(CONFIG_SOURCE_ANNOTATION)
        .is_some_and(|source| source != API_SERVER_SOURCE);
    from_manifest || annotations.contains_key(CONFIG_MIRROR_ANNOTATION)
}

/// The API's pod has another UID than the runtime's and is not static.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "expected pod UID {expected} but got {actual} from the API for pod {namespace}/{name}; it is not a static pod (no {CONFIG_SOURCE_ANNOTATION} other than {API_SERVER_SOURCE:?}, no {CONFIG_MIRROR_ANNOTATION}), so the pod was probably deleted and recreated: the runtime will retry with the new pod"
)]
pub struct UidMismatch {
    pub namespace: String,
    pub name: String,
    /// `K8S_POD_UID`.
    pub expected: String,
    /// The API's.
    pub actual: String,
}

impl UidMismatch {
    /// The CNI error code: 4 (invalid environment variables), as before.
    pub fn cni_code(&self) -> u32 {
        4
    }
}

/// Checks the API's pod against the runtime's `K8S_POD_UID`: equal UIDs,
/// either one unknown (empty), or a static pod pass.
pub fn check_pod_uid(
    namespace: &str,
    name: &str,
    expected: &str,
    actual: &str,
    annotations: &BTreeMap<String, String>,
) -> Result<(), UidMismatch> {
    if expected.is_empty() || actual.is_empty() || expected == actual || is_static_pod(annotations)
    {
        return Ok(());
    }
    Err(UidMismatch {
        namespace: namespace.into(),
        name: name.into(),
        expected: expected.into(),
        actual: actual.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn static_pods_are_known_by_their_annotations() {
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[], false),
            (&[(CONFIG_SOURCE_ANNOTATION, "api")], false),
            (&[(CONFIG_SOURCE_ANNOTATION, "file")], true),
            (&[(CONFIG_SOURCE_ANNOTATION, "http")], true),
            (&[(CONFIG_SOURCE_ANNOTATION, "")], true),
            (&[(CONFIG_MIRROR_ANNOTATION, "0123abcd")], true),
            (
                &[
                    (CONFIG_SOURCE_ANNOTATION, "api"),
                    (CONFIG_MIRROR_ANNOTATION, "0123abcd"),
                ],
                true,
            ),
            (&[("kubernetes.io/config.hash", "0123abcd")], false),
            (&[("Kubernetes.io/Config.Source", "file")], false),
        ];
        for (pairs, expected) in cases {
            assert_eq!(
                is_static_pod(&annotations(pairs)),
                *expected,
                "annotations {pairs:?}"
            );
        }
    }

    #[test]
    fn a_uid_mismatch_passes_only_for_a_static_pod() {
        let none = annotations(&[]);
        let file = annotations(&[(CONFIG_SOURCE_ANNOTATION, "file")]);
        let mirror = annotations(&[(CONFIG_MIRROR_ANNOTATION, "hash")]);
        let api = annotations(&[(CONFIG_SOURCE_ANNOTATION, "api")]);
        assert_eq!(check_pod_uid("ns", "p", "u1", "u1", &none), Ok(()));
        assert_eq!(check_pod_uid("ns", "p", "", "u1", &none), Ok(()));
        assert_eq!(check_pod_uid("ns", "p", "u1", "", &none), Ok(()));
        assert_eq!(check_pod_uid("ns", "p", "u1", "u2", &file), Ok(()));
        assert_eq!(check_pod_uid("ns", "p", "u1", "u2", &mirror), Ok(()));
        for plain in [&none, &api] {
            let err = check_pod_uid("ns", "p", "u1", "u2", plain).unwrap_err();
            assert_eq!(err.cni_code(), 4);
            assert_eq!(
                err,
                UidMismatch {
                    namespace: "ns".into(),
                    name: "p".into(),
                    expected: "u1".into(),
                    actual: "u2".into()
                }
            );
            let message = err.to_string();
            assert!(
                message.starts_with("expected pod UID u1 but got u2 from the API for pod ns/p;"),
                "{message}"
            );
            assert!(message.contains(CONFIG_MIRROR_ANNOTATION), "{message}");
        }
    }
}

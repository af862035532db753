//! k3s's own images: which entries of a release's `k3s-images.txt` the node needs, given the
//! components the spec disables. Pure: the list is fetched by `oci::resolve`.
//!
//! Without these images nothing k3s runs can start on an air-gapped node: the pause image is
//! every pod's sandbox, and CoreDNS, local-path-provisioner (with the busybox its helper pod
//! runs), metrics-server and the helm-controller's job image (klipper-helm) are pods too.

use crate::spec::K3s;

/// The file a k3s release publishes beside its binaries.
pub const IMAGE_LIST_NAME: &str = "k3s-images.txt";

/// Prefix of the lock names of system images (`k3s/mirrored-pause`); spec image names are DNS
/// labels, so the two can never collide.
pub const SYSTEM_NAME_PREFIX: &str = "k3s/";

/// k3s components whose images the list carries, by the repository that holds them. An image
/// of no listed component (a future k3s's) is always kept: better carried than missing.
const COMPONENTS: [(&str, &str); 7] = [
    ("rancher/mirrored-coredns-coredns", "coredns"),
    ("rancher/local-path-provisioner", "local-storage"),
    // The local-path helper pod (volume setup and teardown).
    ("rancher/mirrored-library-busybox", "local-storage"),
    ("rancher/mirrored-metrics-server", "metrics-server"),
    ("rancher/klipper-helm", "helm-controller"),
    ("rancher/klipper-lb", "servicelb"),
    ("rancher/mirrored-library-traefik", "traefik"),
];

/// The list's URL: `spec.k3s.imagesUrl`, else `k3s-images.txt` beside `spec.k3s.binaryUrl`.
pub fn image_list_url(k3s: &K3s) -> String {
    match &k3s.images_url {
        Some(url) => url.clone(),
        None => list_url_beside(&k3s.binary_url),
    }
}

/// `k3s-images.txt` in the directory of `binary_url`.
pub fn list_url_beside(binary_url: &str) -> String {
    match binary_url.rfind('/') {
        Some(i) => format!("{}{IMAGE_LIST_NAME}", &binary_url[..=i]),
        None => IMAGE_LIST_NAME.to_string(),
    }
}

/// The references of a `k3s-images.txt`: one per line, blank lines and `#` comments ignored,
/// in file order, duplicates dropped.
pub fn parse_image_list(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !out.iter().any(|r| r == line) {
            out.push(line.to_string());
        }
    }
    out
}

/// The component an image belongs to, when it is one the spec can disable.
pub fn component_of(reference: &str) -> Option<&'static str> {
    let name = reference.split(['@']).next().unwrap_or(reference);
    // Strip the tag (a ':' after the last '/'), then the registry host.
    let name = match (name.rfind(':'), name.rfind('/')) {
        (Some(c), Some(s)) if c > s => &name[..c],
        (Some(c), None) => &name[..c],
        _ => name,
    };
    COMPONENTS
        .iter()
        .find(|(repo, _)| name == *repo || name.ends_with(&format!("/{repo}")))
        .map(|(_, component)| *component)
}

/// The components the node will not run: `spec.k3s.disable`, plus metrics-server when
/// `spec.k3s.metricsServer` is false (install disables it then).
pub fn disabled_components(k3s: &K3s) -> Vec<String> {
    let mut out = k3s.disable.clone();
    if !k3s.metrics_server && !out.iter().any(|d| d == "metrics-server") {
        out.push("metrics-server".into());
    }
    out
}

/// The list's references the node needs: those of no disabled component.
pub fn needed(list: &[String], k3s: &K3s) -> Vec<String> {
    let disabled = disabled_components(k3s);
    list.iter()
        .filter(|r| component_of(r).is_none_or(|c| !disabled.iter().any(|d| d == c)))
        .cloned()
        .collect()
}

/// Whether two references name the same image once normalised (`busybox:1` and
/// `docker.io/library/busybox:1` do). Unparsable references compare as written.
pub fn same_image(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        oci_client::Reference::try_from(s)
            .map(|r| r.whole())
            .unwrap_or_else(|_| s.to_string())
    };
    a == b || norm(a) == norm(b)
}

/// k3s's sandbox image, the default of its `--pause-image` flag for v1.33 (the list of every
/// k3s v1.33 release carries it): the first container of every pod. Without it on the node no
/// pod starts offline, whatever else the bundle carries.
pub const PAUSE_IMAGE: &str = "docker.io/rancher/mirrored-pause:3.6";

/// The repository of [`PAUSE_IMAGE`], whatever the tag or registry a list names it with.
pub const PAUSE_REPOSITORY: &str = "rancher/mirrored-pause";

/// Whether `reference` is k3s's pause image (any tag, any registry).
pub fn is_pause(reference: &str) -> bool {
    let name = reference.split('@').next().unwrap_or(reference);
    let name = match (name.rfind(':'), name.rfind('/')) {
        (Some(c), Some(s)) if c > s => &name[..c],
        _ => name,
    };
    name == PAUSE_REPOSITORY || name.ends_with(&format!("/{PAUSE_REPOSITORY}"))
}

/// A warning when a release's image list carries no pause image: the bundle would install,
/// and no pod could start on an air-gapped node.
pub fn missing_pause_warning(list: &[String], list_url: &str) -> Option<String> {
    (!list.iter().any(|r| is_pause(r))).then(|| {
        format!(
            "k3s's image list {list_url} names no pause image ({PAUSE_REPOSITORY}): the bundle \
             will not carry k3s's sandbox image {PAUSE_IMAGE}, and no pod can start on an \
             air-gapped node (verify's images check fails naming it)"
        )
    })
}

/// The lock name of a system image: `k3s/` + the last path segment of its repository.
pub fn system_name(reference: &str) -> String {
    let no_digest = reference.split('@').next().unwrap_or(reference);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    let repo = last.split(':').next().unwrap_or(last);
    format!("{SYSTEM_NAME_PREFIX}{repo}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// k3s v1.33.5+k3s1's k3s-images.txt (the release asset, as read from k3s's release notes
    /// and scripts/airgap/image-list.txt).
    const V1_33: &str = include_str!("../../tests/fixtures/k3s-images-v1.33.5.txt");

    fn k3s(disable: &[&str], metrics: bool) -> K3s {
        let mut k: K3s = serde_saphyr::from_str(
            "version: v1.33.5+k3s1\nbinaryUrl: https://example.test/download/v1.33.5%2Bk3s1/k3s-arm64\n",
        )
        .expect("k3s section");
        k.disable = disable.iter().map(|s| s.to_string()).collect();
        k.metrics_server = metrics;
        k
    }

    #[test]
    fn list_url_defaults_beside_the_binary() {
        let mut k = k3s(&[], true);
        assert_eq!(
            image_list_url(&k),
            "https://example.test/download/v1.33.5%2Bk3s1/k3s-images.txt"
        );
        k.images_url = Some("http://127.0.0.1:9/list.txt".into());
        assert_eq!(image_list_url(&k), "http://127.0.0.1:9/list.txt");
    }

    #[test]
    fn disabling_traefik_keeps_every_other_system_image() {
        let list = parse_image_list(V1_33);
        assert_eq!(list.len(), 8);
        let needed = needed(&list, &k3s(&["traefik"], true));
        assert_eq!(needed.len(), 7);
        assert!(!needed.iter().any(|r| r.contains("traefik")));
        assert!(needed.contains(&"docker.io/rancher/mirrored-pause:3.6".to_string()));
    }

    #[test]
    fn each_component_takes_its_images_away() {
        let list = parse_image_list(V1_33);
        let all = [
            "traefik",
            "servicelb",
            "metrics-server",
            "local-storage",
            "coredns",
        ];
        let left = needed(&list, &k3s(&all, true));
        assert_eq!(
            left,
            [
                "docker.io/rancher/klipper-helm:v0.9.8-build20250709",
                "docker.io/rancher/mirrored-pause:3.6"
            ]
        );
        let left = needed(&list, &k3s(&["helm-controller"], false));
        assert!(!left.iter().any(|r| r.contains("klipper-helm")));
        assert!(!left.iter().any(|r| r.contains("metrics-server")));
        assert!(left.iter().any(|r| r.contains("busybox")));
    }

    #[test]
    fn parse_skips_comments_blanks_and_duplicates() {
        let list = parse_image_list("# k3s\n\n  a:1  \na:1\nb@sha256:00\n");
        assert_eq!(list, ["a:1", "b@sha256:00"]);
    }

    #[test]
    fn components_match_on_repository_not_on_substrings() {
        assert_eq!(
            component_of("docker.io/rancher/klipper-lb:v0.4.13"),
            Some("servicelb")
        );
        assert_eq!(
            component_of("127.0.0.1:5000/rancher/mirrored-pause:3.6"),
            None
        );
        assert_eq!(component_of("docker.io/rancher/klipper-lb-x:v1"), None);
        assert_eq!(
            component_of("registry.local:5000/rancher/klipper-helm@sha256:ab"),
            Some("helm-controller")
        );
    }

    #[test]
    fn same_image_normalises_docker_hub_names() {
        assert!(same_image(
            "busybox:1.36.1",
            "docker.io/library/busybox:1.36.1"
        ));
        assert!(!same_image("busybox:1.36.1", "busybox:1.37.0"));
    }

    #[test]
    fn a_list_without_the_pause_image_is_warned_about() {
        let list = parse_image_list(V1_33);
        assert!(missing_pause_warning(&list, "http://x/k3s-images.txt").is_none());
        let without: Vec<String> = list.into_iter().filter(|r| !is_pause(r)).collect();
        assert_eq!(without.len(), 7);
        let w = missing_pause_warning(&without, "http://x/k3s-images.txt").unwrap();
        assert!(
            w.contains(PAUSE_IMAGE) && w.contains("http://x/k3s-images.txt"),
            "{w}"
        );
        assert!(is_pause("127.0.0.1:5000/rancher/mirrored-pause@sha256:00"));
        assert!(!is_pause("docker.io/rancher/mirrored-pause-x:3.6"));
    }

    #[test]
    fn system_names_are_the_repository_leaf() {
        assert_eq!(
            system_name("docker.io/rancher/mirrored-pause:3.6"),
            "k3s/mirrored-pause"
        );
        assert_eq!(system_name("127.0.0.1:5000/a/b@sha256:00"), "k3s/b");
    }
}

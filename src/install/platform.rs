//! Does the bundle's platform run on this host? Pure, so the `/` semantics are testable on any
//! machine (tests never install to `/`).

use crate::spec::Platform;

/// The OCI architecture name of a Rust `target_arch` (`std::env::consts::ARCH`, the same as
/// `uname -m` for the binary that runs), or None when OCI has no name for it.
pub fn oci_arch(rust_arch: &str) -> Option<&'static str> {
    Some(match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "loongarch64" => "loong64",
        _ => return None,
    })
}

/// `os/arch` of the running host.
pub fn host() -> (String, String) {
    let arch = oci_arch(std::env::consts::ARCH).unwrap_or(std::env::consts::ARCH);
    (std::env::consts::OS.to_string(), arch.to_string())
}

/// Ok when a bundle for `bundle` runs on a host that is `host_os`/`host_arch`. The variant is
/// not compared: k3s ships one binary per architecture and arm64 hosts run every v8 variant.
pub fn check(bundle: &Platform, host_os: &str, host_arch: &str) -> Result<(), String> {
    if bundle.os == host_os && bundle.architecture == host_arch {
        Ok(())
    } else {
        Err(format!(
            "the bundle is for {bundle} but this host is {host_os}/{host_arch}\n  help: build the \
             bundle with `spec.platform: {host_os}/{host_arch}`, or stage it for another machine \
             with --root DIR"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spark_bundle_on_spark_and_elsewhere() {
        let arm = Platform::parse("linux/arm64").unwrap();
        assert!(check(&arm, "linux", oci_arch("aarch64").unwrap()).is_ok());
        let e = check(&arm, "linux", oci_arch("x86_64").unwrap()).unwrap_err();
        assert!(
            e.contains("linux/arm64") && e.contains("linux/amd64"),
            "{e}"
        );
        let v8 = Platform::parse("linux/arm64/v8").unwrap();
        assert!(check(&v8, "linux", "arm64").is_ok());
    }
}

//! Can this host run the bundle? Its platform, and a default route (k3s picks the node IP from
//! it). Pure over what is passed in, so the `/` semantics are testable on any machine (tests
//! never install to `/`).

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

/// Where the kernel lists IPv4 and IPv6 routes.
pub const ROUTE_TABLES: [&str; 2] = ["/proc/net/route", "/proc/net/ipv6_route"];

/// Whether `/proc/net/route` (IPv4) or `/proc/net/ipv6_route` (IPv6) text holds a default
/// route: destination and mask all zero (IPv4), or destination `::/0` (IPv6).
pub fn has_default_route(ipv4: &str, ipv6: &str) -> bool {
    let v4 = ipv4.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 7 && f[1] == "00000000" && f[7] == "00000000"
    });
    let v6 = ipv6.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // dest, dest prefix length, ..., device; `lo` carries the unreachable default.
        f.len() > 9 && f[0].bytes().all(|b| b == b'0') && f[1] == "00" && f[9] != "lo"
    });
    v4 || v6
}

/// Ok when the host has a default route; k3s needs one to choose the node IP, even on an
/// air-gapped machine, and fails at start without it.
pub fn check_default_route(ipv4: &str, ipv6: &str) -> Result<(), String> {
    if has_default_route(ipv4, ipv6) {
        return Ok(());
    }
    Err(
        "this host has no default route, and k3s needs one to pick the node IP (even with no \
         network beyond the machine)\n  help: add one on a dummy interface, e.g.\n    \
         ip link add sparkgap0 type dummy && ip link set sparkgap0 up\n    \
         ip addr add 203.0.113.254/31 dev sparkgap0\n    \
         ip route add default via 203.0.113.255 dev sparkgap0 metric 1000\n  \
         (make it persistent in your network configuration); nothing was written"
            .into(),
    )
}

#[cfg(test)]
mod route_tests {
    use super::*;

    const V4_DEFAULT: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";
    const V4_LOCAL: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";
    const V6_LO_ONLY: &str = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";
    const V6_DEFAULT: &str = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth0
";

    #[test]
    fn a_default_route_is_found_in_either_table() {
        assert!(has_default_route(V4_DEFAULT, ""));
        assert!(has_default_route(V4_LOCAL, V6_DEFAULT));
        assert!(!has_default_route(V4_LOCAL, V6_LO_ONLY));
        assert!(!has_default_route("", ""));
    }

    #[test]
    fn no_default_route_says_how_to_add_one() {
        let e = check_default_route(V4_LOCAL, V6_LO_ONLY).unwrap_err();
        assert!(e.contains("ip route add default"), "{e}");
        assert!(e.contains("nothing was written"), "{e}");
    }
}

//! What k3s leaves running after it stops, stopped: the work of k3s's own `k3s-killall.sh`
//! (written by k3s's install.sh, `create_killall`), done by `uninstall` on the host (`--root /`)
//! before it removes any file.
//!
//! The k3s unit has `KillMode=process`: `systemctl stop k3s` ends k3s (and containerd with it)
//! but the runc shims and the containers keep running, with their mounts (pod volumes under
//! `/var/lib/kubelet/pods`, root filesystems under `/run/k3s`, pod network namespaces under
//! `/run/netns`), the `cni0` bridge and its veths, and the rules kube-proxy and the network
//! policy controller wrote. k3s's script kills the shims' process trees, unmounts those paths,
//! deletes the interfaces and filters the `KUBE-`/`CNI-`/flannel lines out of the firewall;
//! so does this, and it also destroys kube-router's ipsets (`KUBE-*`), which the script leaves.
//!
//! The shims are found by the socket they serve (`-address /run/k3s/containerd/containerd.sock`
//! on their command line) rather than by k3s's data directory in their path, which the script
//! uses: the same processes on a k3s host, and only k3s's, never another containerd's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The containerd socket k3s runs (k3s: `pkg/agent/config`, `/run/k3s/containerd`).
pub const CONTAINERD_SOCKET: &str = "/run/k3s/containerd/containerd.sock";

/// k3s's runtime directory (containerd's state and socket).
pub const RUN_DIR: &str = "/run/k3s";

/// Mount points under these prefixes are unmounted (k3s-killall.sh: `do_unmount_and_remove`,
/// which matches by string prefix, as here).
pub const UNMOUNT_UNDER: [&str; 5] = [
    "/run/k3s",
    "/var/lib/rancher/k3s",
    "/var/lib/kubelet/pods",
    "/var/lib/kubelet/plugins",
    "/run/netns/cni-",
];

/// Interfaces k3s's networking creates (k3s-killall.sh: `remove_interfaces`); the veths enslaved
/// to `cni0` go first.
pub const INTERFACES: [&str; 6] = [
    "cni0",
    "flannel.1",
    "flannel-v6.1",
    "kube-ipvs0",
    "flannel-wg",
    "flannel-wg-v6",
];

/// What was stopped and removed, for the uninstall report.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Killed {
    /// Processes killed: the shims and everything below them (the containers).
    pub processes: usize,
    pub unmounted: Vec<String>,
    pub interfaces: Vec<String>,
    /// Firewall lines (rules and chains) removed from iptables and ip6tables.
    pub firewall_lines: usize,
    pub ipsets: Vec<String>,
    /// What could not be done (the uninstall then refuses to delete under live mounts, or
    /// reports it).
    pub problems: Vec<String>,
}

/// Stop what k3s left running on this host. Only for `--root /`.
pub fn killall() -> Killed {
    let mut k = Killed::default();
    kill_shims(&mut k);
    unmount(&mut k);
    // k3s's runtime state (k3s-uninstall.sh removes it too); only once nothing is mounted
    // below it, so the removal cannot reach into a live mount.
    if k.problems.is_empty()
        && let Err(e) = std::fs::remove_dir_all(RUN_DIR)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        k.problems.push(format!("{RUN_DIR}: cannot remove: {e}"));
    }
    remove_interfaces(&mut k);
    if let Err(e) = std::fs::remove_dir_all("/var/lib/cni")
        && e.kind() != std::io::ErrorKind::NotFound
    {
        k.problems.push(format!("/var/lib/cni: cannot remove: {e}"));
    }
    filter_firewall(&mut k);
    destroy_ipsets(&mut k);
    k
}

/// Whether a process's NUL-separated command line is a containerd shim serving k3s's socket.
pub fn is_k3s_shim(cmdline: &[u8]) -> bool {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let Some(argv0) = args.first() else {
        return false;
    };
    let name = argv0.rsplit(|b| *b == b'/').next().unwrap_or(argv0);
    name.starts_with(b"containerd-shim")
        && args
            .windows(2)
            .any(|w| w[0] == b"-address" && w[1] == CONTAINERD_SOCKET.as_bytes())
}

/// `roots` and every process below them, given each process's parent.
pub fn process_tree(roots: &[i32], parent_of: &BTreeMap<i32, i32>) -> BTreeSet<i32> {
    let mut out: BTreeSet<i32> = roots.iter().copied().collect();
    loop {
        let more: Vec<i32> = parent_of
            .iter()
            .filter(|(pid, ppid)| out.contains(ppid) && !out.contains(pid))
            .map(|(pid, _)| *pid)
            .collect();
        if more.is_empty() {
            return out;
        }
        out.extend(more);
    }
}

/// The parent pid from `/proc/<pid>/stat` (the field after the parenthesised command name,
/// which may itself hold spaces and parentheses).
fn parent_from_stat(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn processes() -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

fn kill_shims(k: &mut Killed) {
    let mut shims = Vec::new();
    let mut parent_of = BTreeMap::new();
    for pid in processes() {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            && let Some(ppid) = parent_from_stat(&stat)
        {
            parent_of.insert(pid, ppid);
        }
        if std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| is_k3s_shim(&c)) {
            shims.push(pid);
        }
    }
    if shims.is_empty() {
        return;
    }
    let tree = process_tree(&shims, &parent_of);
    for pid in &tree {
        // SAFETY: kill(2) has no memory effects; a pid gone since the scan gives ESRCH.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    k.processes = tree.len();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tree
        .iter()
        .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
    {
        if Instant::now() > deadline {
            k.problems
                .push("container processes still exist 10 s after SIGKILL".to_string());
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Mount points of `/proc/self/mountinfo` text, octal escapes (`\040` for a space) decoded.
pub fn mount_points(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_octal)
        .collect()
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount points to unmount, deepest (longest) first, each once.
pub fn to_unmount(points: &[String]) -> Vec<String> {
    let mut out: Vec<String> = points
        .iter()
        .filter(|p| UNMOUNT_UNDER.iter().any(|pre| p.starts_with(pre)))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    out.sort_by(|a, b| b.cmp(a));
    out
}

fn unmount(k: &mut Killed) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    for point in to_unmount(&mount_points(&info)) {
        let Ok(c) = std::ffi::CString::new(point.as_bytes()) else {
            continue;
        };
        // A mount point may be stacked several times: unmount until it is no longer one.
        let mut n = 0;
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the calls.
        while n < 8 && unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
            n += 1;
        }
        if n == 0 {
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                // Gone with its parent, or not a mount point any more.
                Some(libc::EINVAL) | Some(libc::ENOENT) => {}
                // In use: detach it, as `umount -l` (the processes holding it are gone, so
                // this only frees what the kernel still references).
                // SAFETY: as above.
                _ if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 => n = 1,
                _ => {
                    k.problems.push(format!("{point}: cannot unmount: {err}"));
                    continue;
                }
            }
        }
        if n > 0 {
            k.unmounted.push(point.clone());
        }
        // The script removes what it unmounted; only what is now empty goes here (a volume's
        // data lives in its source, never in the mount point itself).
        let p = Path::new(&point);
        let _ = if p.is_dir() {
            std::fs::remove_dir(p)
        } else {
            std::fs::remove_file(p)
        };
    }
}

/// Interface names of `ip -o link show master cni0` output (`3: veth1a2b@if2: <...> ...`).
pub fn enslaved(ip_link: &str) -> Vec<String> {
    ip_link
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

fn ip(args: &[&str]) -> Option<std::process::Output> {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
}

fn remove_interfaces(k: &mut Killed) {
    let Some(out) = ip(&["-o", "link", "show", "master", "cni0"]) else {
        k.problems
            .push("ip (iproute2) is not installed: network interfaces were left".into());
        return;
    };
    let mut names = enslaved(&String::from_utf8_lossy(&out.stdout));
    names.extend(INTERFACES.iter().map(|s| s.to_string()));
    for name in names {
        let exists = ip(&["link", "show", "dev", &name]).is_some_and(|o| o.status.success());
        if !exists {
            continue;
        }
        match ip(&["link", "delete", &name]) {
            Some(o) if o.status.success() => k.interfaces.push(name),
            Some(o) => k.problems.push(format!(
                "ip link delete {name}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            None => {}
        }
    }
}

/// iptables-save text without k3s's lines (k3s-killall.sh: `grep -v KUBE- | grep -v CNI- |
/// grep -iv flannel`), and how many lines went.
pub fn without_k3s_rules(save: &str) -> (String, usize) {
    let mut removed = 0;
    let mut out = String::with_capacity(save.len());
    for line in save.lines() {
        if line.contains("KUBE-")
            || line.contains("CNI-")
            || line.to_lowercase().contains("flannel")
        {
            removed += 1;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    (out, removed)
}

fn filter_firewall(k: &mut Killed) {
    for (save, restore) in [
        ("iptables-save", "iptables-restore"),
        ("ip6tables-save", "ip6tables-restore"),
    ] {
        let Ok(out) = Command::new(save).stdin(Stdio::null()).output() else {
            continue;
        };
        if !out.status.success() {
            continue;
        }
        let (kept, removed) = without_k3s_rules(&String::from_utf8_lossy(&out.stdout));
        if removed == 0 {
            continue;
        }
        let fed = Command::new(restore)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write as _;
                child
                    .stdin
                    .take()
                    .expect("piped stdin")
                    .write_all(kept.as_bytes())?;
                child.wait_with_output()
            });
        match fed {
            Ok(o) if o.status.success() => k.firewall_lines += removed,
            Ok(o) => k.problems.push(format!(
                "{restore}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => k.problems.push(format!("{restore}: {e}")),
        }
    }
}

/// The sets kube-router's network policy controller creates (`KUBE-SRC-…`, `KUBE-DST-…`, …).
pub fn is_k3s_ipset(name: &str) -> bool {
    name.starts_with("KUBE-") || name.starts_with("kube-router")
}

fn destroy_ipsets(k: &mut Killed) {
    let Ok(out) = Command::new("ipset")
        .args(["list", "-n"])
        .stdin(Stdio::null())
        .output()
    else {
        return;
    };
    for name in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|n| is_k3s_ipset(n))
    {
        match Command::new("ipset").args(["destroy", name]).output() {
            Ok(o) if o.status.success() => k.ipsets.push(name.to_string()),
            Ok(o) => k.problems.push(format!(
                "ipset destroy {name}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => k.problems.push(format!("ipset destroy {name}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shims_of_k3s_are_found_by_their_socket() {
        let k3s = b"/var/lib/rancher/k3s/data/abc/bin/containerd-shim-runc-v2\0-namespace\0k8s.io\0-id\0x\0-address\0/run/k3s/containerd/containerd.sock\0";
        assert!(is_k3s_shim(k3s));
        let other = b"/usr/bin/containerd-shim-runc-v2\0-namespace\0moby\0-address\0/run/containerd/containerd.sock\0";
        assert!(!is_k3s_shim(other));
        let not_a_shim = b"/bin/sh\0-c\0echo -address /run/k3s/containerd/containerd.sock\0";
        assert!(!is_k3s_shim(not_a_shim));
        assert!(!is_k3s_shim(b""));
    }

    #[test]
    fn the_tree_below_the_shims_is_taken_and_nothing_else() {
        // 1 init; 10 shim -> 11 pause, 12 app -> 13 child; 20 unrelated.
        let parents = BTreeMap::from([(10, 1), (11, 10), (12, 10), (13, 12), (20, 1)]);
        assert_eq!(
            process_tree(&[10], &parents),
            BTreeSet::from([10, 11, 12, 13])
        );
    }

    #[test]
    fn parent_pid_survives_odd_command_names() {
        assert_eq!(parent_from_stat("42 (a) b (c)) S 7 42 42 0"), Some(7));
        assert_eq!(parent_from_stat("garbage"), None);
    }

    #[test]
    fn mounts_are_chosen_by_prefix_deepest_first() {
        let info = "\
22 1 0:21 / /run rw - tmpfs tmpfs rw
30 22 0:40 / /run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io/abc/rootfs rw - overlay overlay rw
31 1 0:41 / /var/lib/kubelet/pods/uid/volumes/kubernetes.io~projected/kube-api-access-x rw - tmpfs tmpfs rw
32 22 0:4 / /run/netns/cni-1234 rw - nsfs nsfs rw
33 1 0:42 / /var/lib/kubelet\\040other rw - tmpfs tmpfs rw
34 1 0:43 / /var/lib/rancher/k3s/storage rw - ext4 /dev/vda rw
";
        let points = mount_points(info);
        assert!(points.contains(&"/var/lib/kubelet other".to_string()));
        assert_eq!(
            to_unmount(&points),
            vec![
                "/var/lib/rancher/k3s/storage",
                "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~projected/kube-api-access-x",
                "/run/netns/cni-1234",
                "/run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io/abc/rootfs",
            ]
        );
    }

    #[test]
    fn veths_on_cni0_are_read_from_ip_link() {
        let out = "5: veth12ab@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue master cni0\n6: vethcd34@if2: <BROADCAST> mtu 1500 master cni0\n";
        assert_eq!(enslaved(out), vec!["veth12ab", "vethcd34"]);
        assert!(enslaved("").is_empty());
    }

    #[test]
    fn only_k3s_firewall_lines_go() {
        let save = "\
*nat
:PREROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A POSTROUTING -s 10.42.0.0/16 -m comment --comment \"flannel masq\" -j MASQUERADE
-A POSTROUTING -o eth0 -j MASQUERADE
COMMIT
";
        let (kept, removed) = without_k3s_rules(save);
        assert_eq!(removed, 4);
        assert_eq!(
            kept,
            "*nat\n:PREROUTING ACCEPT [0:0]\n-A POSTROUTING -o eth0 -j MASQUERADE\nCOMMIT\n"
        );
    }

    #[test]
    fn kube_router_sets_are_recognised() {
        assert!(is_k3s_ipset("KUBE-DST-ABCDEF"));
        assert!(is_k3s_ipset("kube-router-local-ips"));
        assert!(!is_k3s_ipset("docker-allow"));
    }
}

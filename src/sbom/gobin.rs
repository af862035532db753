//! Go build info, read from an ELF file as it streams past: the modules a Go binary was linked
//! from (`go version -m`), without holding the binary in memory.
//!
//! Go 1.18 and later write the build info inline in the `.go.buildinfo` blob at the start of
//! the binary's first writable data segment: a 32-byte header (`\xff Go buildinf:`, pointer
//! size, flags), then two varint-prefixed strings, the Go version and the module info (Go's
//! `debug/buildinfo`). The scanner captures the bytes after every 16-byte-aligned magic it
//! meets, and prefers the one inside that data segment (found from the program headers at the
//! start of the file): a binary that embeds another Go binary, or the `debug/buildinfo`
//! package's own magic string, has other copies of the magic elsewhere. Older binaries keep
//! their build info behind pointers, which a single pass cannot follow: they are reported as
//! not read.
//!
//! What a binary's packages are follows syft's Go binary cataloger (v1.57.2,
//! `syft/pkg/cataloger/golang/parse_go_binary.go`), which the SBOM test compares with: the main
//! module (its `(devel)` version replaced by one from `-ldflags` or the VCS stamp, as syft
//! does), every dependency under its replacement's path and version, and `stdlib` at the Go
//! version.

use memchr::memmem;
use object::read::elf::{FileHeader, ProgramHeader};
use serde::{Deserialize, Serialize};

const MAGIC: &[u8] = b"\xff Go buildinf:";
const HEADER: usize = 32;
const ALIGN: u64 = 16;
/// Bytes kept after a magic: the version and module info of the largest binaries (k3s lists
/// some 400 modules, ~60 KiB) fit many times over.
const CAPTURE: usize = 4 << 20;
/// Bytes of the file's start kept for the ELF and program headers.
const PREFIX: usize = 64 << 10;
/// At most this many magic hits are followed in one file.
const MAX_CANDIDATES: usize = 8;
const DEVEL: &str = "(devel)";

/// A module of the build info (`mod`, `dep`), with its `=>` replacement.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Module {
    pub path: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sum: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace: Option<Box<Module>>,
}

/// The build info of one Go binary, as `debug.ReadBuildInfo` gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildInfo {
    /// `go1.26.8` (with any ` X:experiment` suffix Go wrote).
    pub go_version: String,
    /// The main package's import path.
    pub path: String,
    pub main: Option<Module>,
    pub deps: Vec<Module>,
    /// `build` settings in order (`-ldflags`, `vcs.revision`, `GOARCH`, ...).
    pub settings: Vec<(String, String)>,
}

/// What a file that looked like an ELF binary turned out to hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum GoFound {
    /// Go 1.18+ build info, read.
    Read { info: BuildInfo },
    /// A Go binary whose build info is behind pointers (Go before 1.18): not read.
    OldFormat,
}

/// One package as the SBOM lists it: a Go module (or `stdlib`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GoPackage {
    pub name: String,
    /// Empty when the binary says nothing usable (a `(devel)` main module without a stamped
    /// version, a local replacement).
    pub version: String,
    /// `h1:` checksum of the module, when the build info has one.
    pub sum: String,
    pub main: bool,
}

/// Streaming scanner: `feed` every byte of the file in order, then `finish`.
#[derive(Default)]
pub struct GoScan {
    /// File offset of the next byte fed.
    offset: u64,
    prefix: Vec<u8>,
    /// Last bytes of the previous chunk, so a magic split across chunks is found.
    carry: Vec<u8>,
    candidates: Vec<(u64, Vec<u8>)>,
}

impl GoScan {
    pub fn new() -> GoScan {
        GoScan::default()
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if self.prefix.len() < PREFIX {
            let n = (PREFIX - self.prefix.len()).min(chunk.len());
            self.prefix.extend_from_slice(&chunk[..n]);
        }
        // Captures begun earlier take this chunk first.
        for (_, bytes) in &mut self.candidates {
            if bytes.len() < CAPTURE {
                let n = (CAPTURE - bytes.len()).min(chunk.len());
                bytes.extend_from_slice(&chunk[..n]);
            }
        }
        let base = self.offset - self.carry.len() as u64;
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(chunk);
        for pos in memmem::find_iter(&data, MAGIC) {
            let at = base + pos as u64;
            if !at.is_multiple_of(ALIGN)
                || self.candidates.len() >= MAX_CANDIDATES
                || self.candidates.iter().any(|(s, _)| *s == at)
            {
                continue;
            }
            let end = data.len().min(pos + CAPTURE);
            self.candidates.push((at, data[pos..end].to_vec()));
        }
        let keep = data.len().min(MAGIC.len() - 1);
        self.carry = data[data.len() - keep..].to_vec();
        self.offset += chunk.len() as u64;
    }

    /// The build info, or None when this is not a Go binary (no valid build info blob).
    pub fn finish(self) -> Option<GoFound> {
        let data_segment = data_segment(&self.prefix);
        let mut parsed: Vec<(u64, GoFound)> = self
            .candidates
            .iter()
            .filter_map(|(at, bytes)| parse_blob(bytes).map(|f| (*at, f)))
            .collect();
        if let Some((start, end)) = data_segment
            && let Some(i) = parsed.iter().position(|(at, _)| *at >= start && *at < end)
        {
            return Some(parsed.swap_remove(i).1);
        }
        parsed.into_iter().next().map(|(_, f)| f)
    }
}

/// File range of the first loadable segment that is writable and not executable (where Go's
/// linker puts `.go.buildinfo`, and where `debug/buildinfo` looks when sections are gone).
fn data_segment(prefix: &[u8]) -> Option<(u64, u64)> {
    if prefix.get(..4) != Some(b"\x7fELF") {
        return None;
    }
    fn first<Elf: FileHeader>(data: &[u8]) -> Option<(u64, u64)> {
        let header = Elf::parse(data).ok()?;
        let endian = header.endian().ok()?;
        let phdrs = header.program_headers(endian, data).ok()?;
        phdrs.iter().find_map(|p| {
            let flags = p.p_flags(endian);
            let w = flags & object::elf::PF_W != 0;
            let x = flags & object::elf::PF_X != 0;
            (p.p_type(endian) == object::elf::PT_LOAD && w && !x).then(|| {
                let off: u64 = p.p_offset(endian).into();
                let size: u64 = p.p_filesz(endian).into();
                (off, off.saturating_add(size))
            })
        })
    }
    match prefix.get(4) {
        Some(&object::elf::ELFCLASS64) => {
            first::<object::elf::FileHeader64<object::Endianness>>(prefix)
        }
        Some(&object::elf::ELFCLASS32) => {
            first::<object::elf::FileHeader32<object::Endianness>>(prefix)
        }
        _ => None,
    }
}

/// A captured blob starting at the magic: the inline build info, or None when the bytes are
/// not one (a stray copy of the magic string).
fn parse_blob(b: &[u8]) -> Option<GoFound> {
    if b.len() < HEADER || !b.starts_with(MAGIC) {
        return None;
    }
    let (ptr_size, flags) = (b[14], b[15]);
    if flags & !0x3 != 0 {
        return None;
    }
    if flags & 0x2 == 0 {
        // Pointer-based (Go < 1.18): the pointer size must be sane for this to be one.
        return matches!(ptr_size, 4 | 8).then_some(GoFound::OldFormat);
    }
    let rest = &b[HEADER..];
    let (version, rest) = varint_string(rest)?;
    let (modinfo, _) = varint_string(rest)?;
    let version = std::str::from_utf8(version).ok()?;
    if !version.starts_with("go") && !version.starts_with("devel") {
        return None;
    }
    // The module info is framed by 16-byte sentinels, with a newline before the closing one.
    let modinfo = if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
        &modinfo[16..modinfo.len() - 16]
    } else {
        &[][..]
    };
    let mut info = parse_modinfo(&String::from_utf8_lossy(modinfo));
    info.go_version = version.to_string();
    Some(GoFound::Read { info })
}

fn varint_string(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (mut n, mut shift, mut i) = (0u64, 0u32, 0usize);
    loop {
        let byte = *b.get(i)?;
        i += 1;
        n |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    let n = usize::try_from(n).ok()?;
    let end = i.checked_add(n)?;
    Some((b.get(i..end)?, &b[end..]))
}

/// `runtime/debug.ParseBuildInfo`'s format: tab-separated lines `path`, `mod`, `dep`, `=>`
/// (replacing the module before it), `build key=value` (key and value quoted Go-style when they
/// hold spaces, quotes or `=`).
pub fn parse_modinfo(text: &str) -> BuildInfo {
    let mut info = BuildInfo::default();
    // Where the last `mod`/`dep` went, for a following `=>`.
    let mut last: Option<usize> = None; // None: main; Some(i): deps[i]
    let mut have_last = false;
    for line in text.lines() {
        let module = |fields: &[&str]| Module {
            path: fields.first().copied().unwrap_or("").to_string(),
            version: fields.get(1).copied().unwrap_or("").to_string(),
            sum: fields.get(2).copied().unwrap_or("").to_string(),
            replace: None,
        };
        if let Some(p) = line.strip_prefix("path\t") {
            info.path = p.to_string();
        } else if let Some(m) = line.strip_prefix("mod\t") {
            info.main = Some(module(&m.split('\t').collect::<Vec<_>>()));
            (last, have_last) = (None, true);
        } else if let Some(d) = line.strip_prefix("dep\t") {
            info.deps.push(module(&d.split('\t').collect::<Vec<_>>()));
            (last, have_last) = (Some(info.deps.len() - 1), true);
        } else if let Some(r) = line.strip_prefix("=>\t") {
            if !have_last {
                continue;
            }
            let rep = Box::new(module(&r.split('\t').collect::<Vec<_>>()));
            match last {
                None => {
                    if let Some(m) = info.main.as_mut() {
                        m.replace = Some(rep);
                    }
                }
                Some(i) => info.deps[i].replace = Some(rep),
            }
            have_last = false;
        } else if let Some(s) = line.strip_prefix("build\t")
            && let Some(kv) = parse_setting(s)
        {
            info.settings.push(kv);
        }
    }
    info
}

fn parse_setting(s: &str) -> Option<(String, String)> {
    let (key, rest) = if s.starts_with('"') {
        let (k, n) = unquote_prefix(s)?;
        (k, s[n..].strip_prefix('=')?)
    } else {
        let (k, v) = s.split_once('=')?;
        (k.to_string(), v)
    };
    let value = if rest.starts_with('"') {
        unquote_prefix(rest)?.0
    } else {
        rest.to_string()
    };
    Some((key, value))
}

/// A Go double-quoted string at the start of `s` (strconv.Quote's escapes): its value and how
/// many bytes it took.
fn unquote_prefix(s: &str) -> Option<(String, usize)> {
    let b = s.as_bytes();
    let mut out: Vec<u8> = Vec::new();
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'"' => return Some((String::from_utf8_lossy(&out).into_owned(), i + 1)),
            b'\\' => {
                let c = *b.get(i + 1)?;
                i += 2;
                match c {
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'a' => out.push(7),
                    b'b' => out.push(8),
                    b'f' => out.push(12),
                    b'v' => out.push(11),
                    b'\\' | b'"' | b'\'' => out.push(c),
                    b'x' => {
                        out.push(u8::from_str_radix(s.get(i..i + 2)?, 16).ok()?);
                        i += 2;
                    }
                    b'u' | b'U' => {
                        let n = if c == b'u' { 4 } else { 8 };
                        let cp = u32::from_str_radix(s.get(i..i + n)?, 16).ok()?;
                        let ch = char::from_u32(cp)?;
                        out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                        i += n;
                    }
                    b'0'..=b'7' => {
                        out.push(u8::from_str_radix(s.get(i - 1..i + 2)?, 8).ok()?);
                        i += 2;
                    }
                    _ => return None,
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    None
}

impl BuildInfo {
    fn setting(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The Go version without experiments (`go1.26.8`).
    pub fn go(&self) -> &str {
        self.go_version
            .split(' ')
            .next()
            .unwrap_or(&self.go_version)
    }

    /// The packages this binary contributes, the way syft's Go binary cataloger lists them:
    /// the main module, every dependency (under its replacement), and `stdlib`.
    pub fn packages(&self) -> Vec<GoPackage> {
        let mut deps = self.deps.clone();
        let mut main = self.main.clone().unwrap_or(Module {
            path: String::new(),
            version: String::new(),
            sum: String::new(),
            replace: None,
        });
        // A binary built from files (`go build x.go`) or without module info: syft takes the
        // one `(devel)` dependency as main, else the package path.
        if (main.path.is_empty() && main.version.is_empty() && !self.path.is_empty())
            || (main.path == "command-line-arguments" && main.version.is_empty())
        {
            let devel: Vec<usize> = (0..deps.len())
                .filter(|&i| deps[i].version == DEVEL)
                .collect();
            main = if devel.len() == 1 {
                deps.remove(devel[0])
            } else {
                Module {
                    path: self.path.clone(),
                    version: DEVEL.into(),
                    sum: String::new(),
                    replace: None,
                }
            };
        }
        let mut out = Vec::new();
        for d in &deps {
            if *d == main {
                continue;
            }
            let p = package(d, false);
            if !p.name.is_empty() {
                out.push(p);
            }
        }
        if !main.path.is_empty() || !main.version.is_empty() {
            if main.version == DEVEL {
                let v = self.main_version(&main.path);
                main.version = if v.is_empty() || v.starts_with('v') {
                    v
                } else {
                    format!("v{v}")
                };
            }
            out.push(package(&main, true));
        }
        let go = self.go();
        if go
            .strip_prefix("go")
            .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        {
            out.push(GoPackage {
                name: "stdlib".into(),
                version: go.to_string(),
                sum: String::new(),
                main: false,
            });
        }
        out.sort();
        out.dedup();
        out
    }

    /// syft's `findMainModuleVersion` with its defaults: a version set through `-ldflags -X`
    /// on the main package or the main module, else a pseudo-version from the VCS stamp.
    fn main_version(&self, main_module: &str) -> String {
        if let Some(v) = self
            .setting("-ldflags")
            .and_then(|l| version_from_ldflags(l, main_module))
        {
            return v;
        }
        match (self.setting("vcs.revision"), self.setting("vcs.time")) {
            (Some(rev), Some(time)) => {
                let rev = rev.get(..12).unwrap_or(rev);
                format!("v0.0.0-{}-{rev}", pseudo_time(time))
            }
            _ => String::new(),
        }
    }
}

fn package(m: &Module, main: bool) -> GoPackage {
    let (name, effective) = match &m.replace {
        Some(r) if r.path.starts_with('.') || r.path.starts_with('/') => (m.path.clone(), &**r),
        Some(r) => (r.path.clone(), &**r),
        None => (m.path.clone(), m),
    };
    let version = if effective.version == DEVEL {
        String::new()
    } else {
        effective.version.clone()
    };
    GoPackage {
        name,
        version,
        sum: effective.sum.clone(),
        main,
    }
}

/// syft's `knownBuildFlagPatterns`, anchored at `main` or a package of the main module.
fn version_from_ldflags(ldflags: &str, main_module: &str) -> Option<String> {
    const PATTERNS: [&str; 2] = [
        r"\.[a-zA-Z0-9]*([rR]elease)?([gG]it)?([bB]uild)?[vV]er(sion)?=(\S+/)*(?P<version>v?\d+.\d+.\d+[-\w]*(?:\.[-\w]+)*)",
        r"\.[a-zA-Z0-9]*([tT]ag)=(\S+/)*(?P<version>v?\d+.\d+.\d+[-\w]*(?:\.[-\w]+)*)",
    ];
    for p in PATTERNS {
        // Go's RE2 classes are ASCII; so are these (`(?-u)` on bytes).
        let re = format!(
            r"(?m-u)(main|{}/[^\s]*){p}",
            regex::escape(main_module).replace('/', r"\/")
        );
        let Ok(re) = regex::bytes::Regex::new(&re) else {
            continue;
        };
        let found = re.captures_iter(ldflags.as_bytes()).find_map(|c| {
            c.name("version")
                .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
                .filter(|v| !v.is_empty())
        });
        if let Some(v) = found {
            return Some(if v.starts_with('v') {
                v
            } else {
                format!("v{v}")
            });
        }
    }
    None
}

/// `vcs.time` (RFC 3339) as a pseudo-version timestamp `yyyymmddhhmmss` in UTC; Go's zero
/// time when it does not parse, as syft does.
fn pseudo_time(t: &str) -> String {
    crate::time::rfc3339_to_compact(t).unwrap_or_else(|| "00010101000000".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(version: &str, modinfo: &str) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.push(8);
        b.push(2);
        b.resize(HEADER, 0);
        let start = b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6";
        let end = b"\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2";
        let mut m = start.to_vec();
        m.extend_from_slice(modinfo.as_bytes());
        m.extend_from_slice(end);
        for s in [version.as_bytes(), &m] {
            let mut n = s.len();
            loop {
                let byte = (n & 0x7f) as u8;
                n >>= 7;
                b.push(if n > 0 { byte | 0x80 } else { byte });
                if n == 0 {
                    break;
                }
            }
            b.extend_from_slice(s);
        }
        b
    }

    const MODINFO: &str = "path\texample.com/app/cmd/app\nmod\texample.com/app\t(devel)\t\ndep\tgolang.org/x/sys\tv0.30.0\th1:abc=\ndep\tk8s.io/api\tv0.0.0\t\n=>\tk8s.io/api\tv0.33.5\th1:def=\ndep\texample.com/local\tv1.0.0\t\n=>\t./local\t\t\nbuild\t-ldflags=\"-X main.version=1.2.3\"\nbuild\tGOARCH=amd64\n";

    #[test]
    fn build_info_is_found_across_chunks_at_an_aligned_offset_only() {
        let mut file = vec![0u8; 1000];
        // A stray, unaligned copy of the magic (as debug/buildinfo's own string) first.
        file[101..101 + MAGIC.len()].copy_from_slice(MAGIC);
        file.resize(4096, 0);
        file.extend_from_slice(&blob("go1.26.8", MODINFO));
        file.resize(9000, 0);
        for chunk in [1usize, 7, 4096, 100_000] {
            let mut s = GoScan::new();
            for c in file.chunks(chunk) {
                s.feed(c);
            }
            let Some(GoFound::Read { info }) = s.finish() else {
                panic!("not found with chunk {chunk}");
            };
            assert_eq!(info.go_version, "go1.26.8");
            assert_eq!(info.path, "example.com/app/cmd/app");
            assert_eq!(info.deps.len(), 3);
        }
    }

    #[test]
    fn packages_follow_syft_replacements_ldflags_and_stdlib() {
        let mut info = parse_modinfo(MODINFO);
        info.go_version = "go1.26.8 X:nocoverageredesign".into();
        let p: Vec<(String, String)> = info
            .packages()
            .into_iter()
            .map(|p| (p.name, p.version))
            .collect();
        let want: Vec<(String, String)> = [
            ("example.com/app", "v1.2.3"),
            ("example.com/local", ""),
            ("golang.org/x/sys", "v0.30.0"),
            ("k8s.io/api", "v0.33.5"),
            ("stdlib", "go1.26.8"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let mut p = p;
        p.sort();
        assert_eq!(p, want);
    }

    #[test]
    fn vcs_stamp_makes_a_pseudo_version() {
        let info = parse_modinfo(
            "path\tx/y\nmod\tx/y\t(devel)\t\nbuild\tvcs.revision=0123456789abcdef0123\nbuild\tvcs.time=2024-03-05T06:07:08Z\n",
        );
        let main = info.packages().into_iter().find(|p| p.main).unwrap();
        assert_eq!(main.version, "v0.0.0-20240305060708-0123456789ab");
    }

    #[test]
    fn not_go_and_garbage_are_none_never_a_panic() {
        let mut s = GoScan::new();
        s.feed(b"\x7fELF\x02\x01\x01");
        assert_eq!(s.finish(), None);
        let mut b = blob("go1.22.0", MODINFO);
        b.truncate(40);
        let mut s = GoScan::new();
        s.feed(&b);
        assert_eq!(s.finish(), None);
        assert_eq!(parse_setting("\"unterminated=x"), None);
    }
}

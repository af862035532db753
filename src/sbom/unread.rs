//! Files of package ecosystems the SBOM does not read yet. They are named in the SBOM's comment
//! fields (per image: the ecosystem, how many files, the first paths), never left out silently.

/// The ecosystem a path belongs to, when it is a package record sparkgap does not read: rpm
/// databases, Python, npm, Java archives, Ruby gems, PHP composer, .NET, opkg.
pub fn ecosystem_of(path: &str) -> Option<&'static str> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
    let ends = |s: &str| path == s || path.ends_with(&format!("/{s}"));
    if ends("var/lib/rpm/Packages")
        || ends("var/lib/rpm/Packages.db")
        || ends("var/lib/rpm/rpmdb.sqlite")
        || ends("usr/lib/sysimage/rpm/Packages.db")
        || ends("usr/lib/sysimage/rpm/rpmdb.sqlite")
    {
        return Some("rpm");
    }
    if (name == "METADATA" && dir.ends_with(".dist-info"))
        || (name == "PKG-INFO" && dir.ends_with(".egg-info"))
    {
        return Some("python");
    }
    if name == "package.json" && dir.contains("node_modules/") {
        return Some("npm");
    }
    if name.ends_with(".jar") || name.ends_with(".war") || name.ends_with(".ear") {
        return Some("java");
    }
    if name.ends_with(".gemspec") && dir.ends_with("specifications") {
        return Some("ruby");
    }
    if ends("vendor/composer/installed.json") {
        return Some("php");
    }
    if name.ends_with(".deps.json") {
        return Some("dotnet");
    }
    if ends("lib/opkg/status") || (dir.ends_with("lib/opkg/info") && name.ends_with(".control")) {
        return Some("opkg");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::ecosystem_of;

    #[test]
    fn known_records_are_named() {
        assert_eq!(ecosystem_of("var/lib/rpm/rpmdb.sqlite"), Some("rpm"));
        assert_eq!(
            ecosystem_of("usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA"),
            Some("python")
        );
        assert_eq!(
            ecosystem_of("app/node_modules/left-pad/package.json"),
            Some("npm")
        );
        assert_eq!(ecosystem_of("opt/app/app.jar"), Some("java"));
        assert_eq!(ecosystem_of("usr/bin/bash"), None);
        assert_eq!(ecosystem_of("package.json"), None);
    }
}

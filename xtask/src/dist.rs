//! `cargo xtask dist`: the release archive for one platform, its sha256, and the krew manifest
//! rendered from `krew-manifest.yaml` for the archives that exist.
//!
//! The template is the one krew-release-bot fills in on a release (`{{ .TagName }}` and
//! `{{ addURIAndSha "URL" .TagName }}`), so the manifest tested here is the manifest published
//! there, except that platforms without an archive in the output directory are left out.
//! Archives hold the binary and LICENSE at their root: tar.gz (`tar` + `flate2`), or zip for
//! Windows (`zip`), packed here so that every platform packs the same way; checksums are `sha2`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

pub const USAGE: &str = "\
usage:
  cargo xtask dist [--tag TAG] [--target TRIPLE] [--binary PATH] [--out DIR]
      release build (unless --binary gives one), archive it with LICENSE as
      DIR/kubectl-calico_harden-TAG-OS-ARCH.tar.gz (.zip for Windows) plus .sha256,
      then render DIR/calico-harden.yaml
  cargo xtask dist manifest [--tag TAG] [--out DIR]
      only render DIR/calico-harden.yaml from the archives already in DIR

TAG defaults to v<version in Cargo.toml>, TRIPLE to this machine, DIR to dist/.";

const BINARY: &str = "kubectl-calico_harden";
const TEMPLATE: &str = "krew-manifest.yaml";
const MANIFEST: &str = "calico-harden.yaml";

struct Opts {
    tag: Option<String>,
    target: Option<String>,
    binary: Option<PathBuf>,
    out: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut opts = Opts {
        tag: None,
        target: None,
        binary: None,
        out: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_string())),
            None => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{flag} needs a value\n\n{USAGE}"))
        };
        match flag {
            "--tag" => opts.tag = Some(value()?),
            "--target" => opts.target = Some(value()?),
            "--binary" => opts.binary = Some(absolute(PathBuf::from(value()?))?),
            "--out" => opts.out = Some(absolute(PathBuf::from(value()?))?),
            _ => return Err(format!("unknown argument {arg:?}\n\n{USAGE}")),
        }
    }
    Ok(opts)
}

fn absolute(path: PathBuf) -> Result<PathBuf, String> {
    std::path::absolute(&path).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let (render_only, args) = match args.first().map(String::as_str) {
        Some("manifest") => (true, &args[1..]),
        Some("-h" | "--help" | "help") => return Err(USAGE.to_string()),
        _ => (false, args),
    };
    let opts = parse(args)?;
    if render_only && (opts.target.is_some() || opts.binary.is_some()) {
        return Err(format!(
            "dist manifest takes only --tag and --out\n\n{USAGE}"
        ));
    }
    let tag = match opts.tag {
        Some(tag) => tag,
        None => format!("v{}", package_version(root)?),
    };
    let out = opts.out.unwrap_or_else(|| root.join("dist"));
    std::fs::create_dir_all(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;

    if !render_only {
        let platform = match &opts.target {
            Some(triple) => Platform::from_triple(triple)?,
            None => Platform::host()?,
        };
        let binary = match opts.binary {
            Some(binary) => binary,
            None => release_build(root, opts.target.as_deref())?,
        };
        let archive = out.join(platform.archive_name(&tag));
        let license =
            std::fs::read(root.join("LICENSE")).map_err(|e| format!("reading LICENSE: {e}"))?;
        let program =
            std::fs::read(&binary).map_err(|e| format!("reading {}: {e}", binary.display()))?;
        let entries = [
            Entry {
                name: format!("{BINARY}{}", platform.exe_suffix()),
                mode: 0o755,
                data: program,
            },
            Entry {
                name: "LICENSE".into(),
                mode: 0o644,
                data: license,
            },
        ];
        let bytes = if platform.os == "windows" {
            zip(&entries, mtime())
        } else {
            tar_gz(&entries, mtime())
        }?;
        std::fs::write(&archive, &bytes)
            .map_err(|e| format!("writing {}: {e}", archive.display()))?;
        let digest = sha256_hex(&bytes);
        let name = platform.archive_name(&tag);
        let sum_file = out.join(format!("{name}.sha256"));
        std::fs::write(&sum_file, format!("{digest}  {name}\n"))
            .map_err(|e| format!("writing {}: {e}", sum_file.display()))?;
        println!("{}  sha256 {digest}", archive.display());
    }

    let template = std::fs::read_to_string(root.join(TEMPLATE))
        .map_err(|e| format!("reading {TEMPLATE}: {e}"))?;
    let (manifest, platforms) = render(&template, &tag, &|file| {
        std::fs::read(out.join(file)).ok().map(|b| sha256_hex(&b))
    })?;
    let manifest_path = out.join(MANIFEST);
    std::fs::write(&manifest_path, manifest)
        .map_err(|e| format!("writing {}: {e}", manifest_path.display()))?;
    println!(
        "{}  platforms: {}",
        manifest_path.display(),
        platforms.join(", ")
    );
    Ok(())
}

fn package_version(root: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(root.join("Cargo.toml"))
        .map_err(|e| format!("reading Cargo.toml: {e}"))?;
    let mut in_package = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package && let Some(rest) = line.strip_prefix("version") {
            let value = rest.trim_start().trim_start_matches('=').trim();
            return Ok(value.trim_matches('"').to_string());
        }
    }
    Err("no version in Cargo.toml's [package]".into())
}

fn release_build(root: &Path, target: Option<&str>) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(root)
        .args(["build", "--release", "--locked", "--bin", BINARY]);
    if let Some(target) = target {
        command.args(["--target", target]);
    }
    let status = command
        .status()
        .map_err(|e| format!("running cargo build: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build --release failed ({status})"));
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let dir = match target {
        Some(target) => target_dir.join(target).join("release"),
        None => target_dir.join("release"),
    };
    let windows = target.map_or(cfg!(windows), |t| t.contains("windows"));
    Ok(dir.join(format!("{BINARY}{}", if windows { ".exe" } else { "" })))
}

#[derive(Debug, PartialEq)]
struct Platform {
    os: &'static str,
    arch: &'static str,
}

impl Platform {
    fn host() -> Result<Self, String> {
        let os = match std::env::consts::OS {
            "linux" => "linux",
            "macos" => "darwin",
            "windows" => "windows",
            other => return Err(format!("no krew platform for OS {other}")),
        };
        Ok(Self {
            os,
            arch: krew_arch(std::env::consts::ARCH)?,
        })
    }

    fn from_triple(triple: &str) -> Result<Self, String> {
        let os = if triple.contains("-linux") {
            "linux"
        } else if triple.contains("-apple-darwin") {
            "darwin"
        } else if triple.contains("-windows") {
            "windows"
        } else {
            return Err(format!("no krew platform for target {triple}"));
        };
        let arch = krew_arch(triple.split('-').next().unwrap_or_default())?;
        Ok(Self { os, arch })
    }

    fn exe_suffix(&self) -> &'static str {
        if self.os == "windows" { ".exe" } else { "" }
    }

    fn archive_name(&self, tag: &str) -> String {
        let extension = if self.os == "windows" {
            "zip"
        } else {
            "tar.gz"
        };
        format!("{BINARY}-{tag}-{}-{}.{extension}", self.os, self.arch)
    }
}

fn krew_arch(arch: &str) -> Result<&'static str, String> {
    match arch {
        "x86_64" => Ok("amd64"),
        "aarch64" => Ok("arm64"),
        other => Err(format!("no krew platform for architecture {other}")),
    }
}

/// Fill in krew-release-bot's template: `{{ .TagName }}` everywhere, each
/// `{{ addURIAndSha "URL" .TagName }}` as `uri:` and `sha256:` when `sha256_of(archive file
/// name)` knows the archive, and the whole platform entry dropped when it does not. Returns the
/// manifest and the `os/arch` of the platforms kept.
fn render(
    template: &str,
    tag: &str,
    sha256_of: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, Vec<String>), String> {
    let mut out = String::new();
    let mut kept = Vec::new();
    let mut lines = template.lines().peekable();
    while let Some(line) = lines.next() {
        out.push_str(&line.replace("{{ .TagName }}", tag));
        out.push('\n');
        if line.trim_end() != "  platforms:" {
            continue;
        }
        // Each list item starts with "  - " and continues with deeper-indented lines.
        while let Some(first) = lines.next_if(|l| l.starts_with("  - ")) {
            let mut item = vec![first];
            while let Some(next) = lines.next_if(|l| l.starts_with("    ")) {
                item.push(next);
            }
            if let Some((text, platform)) = render_platform(&item, tag, sha256_of)? {
                out.push_str(&text);
                kept.push(platform);
            }
        }
    }
    if out.contains("{{") {
        return Err(format!(
            "{TEMPLATE} has a template expression this renderer does not know"
        ));
    }
    if kept.is_empty() {
        return Err(format!(
            "no archive for any platform of {TEMPLATE} (tag {tag}); build one with `cargo xtask dist`"
        ));
    }
    Ok((out, kept))
}

fn render_platform(
    item: &[&str],
    tag: &str,
    sha256_of: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(String, String)>, String> {
    let label = |key: &str| {
        item.iter()
            .find_map(|l| l.trim().strip_prefix(key).map(str::trim))
            .unwrap_or("?")
    };
    let platform = format!("{}/{}", label("os:"), label("arch:"));
    let mut text = String::new();
    let mut found = false;
    for line in item {
        let trimmed = line.trim_start();
        let Some(call) = trimmed.strip_prefix("{{ addURIAndSha \"") else {
            text.push_str(&line.replace("{{ .TagName }}", tag));
            text.push('\n');
            continue;
        };
        let url = call
            .split_once("\" .TagName }}")
            .map(|(url, _)| url.replace("{{ .TagName }}", tag))
            .ok_or_else(|| format!("cannot read the addURIAndSha line of {platform}: {line}"))?;
        let file = url.rsplit('/').next().unwrap_or_default();
        let Some(sha256) = sha256_of(file) else {
            return Ok(None);
        };
        let indent = &line[..line.len() - trimmed.len()];
        let _ = writeln!(text, "{indent}uri: {url}\n{indent}sha256: {sha256}");
        found = true;
    }
    if !found {
        return Err(format!("platform {platform} has no addURIAndSha line"));
    }
    Ok(Some((text, platform)))
}

struct Entry {
    name: String,
    mode: u32,
    data: Vec<u8>,
}

/// The archive entries' modification time: SOURCE_DATE_EPOCH for a reproducible build, else now.
fn mtime() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        })
}

/// A ustar archive owned by root, gzipped; every entry modified at `time` (Unix seconds).
fn tar_gz(entries: &[Entry], time: u64) -> Result<Vec<u8>, String> {
    let io = |e: std::io::Error| format!("packing the tar.gz archive: {e}");
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    for entry in entries {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(entry.mode);
        header.set_size(entry.data.len() as u64);
        header.set_mtime(time);
        header.set_uid(0);
        header.set_gid(0);
        header.set_username("root").map_err(io)?;
        header.set_groupname("root").map_err(io)?;
        tar.append_data(&mut header, &entry.name, entry.data.as_slice())
            .map_err(io)?;
    }
    tar.into_inner().map_err(io)?.finish().map_err(io)
}

/// A zip archive with deflated entries, made on Unix so that the modes survive; every entry
/// modified at `time` (Unix seconds, stored as zip does: UTC, in steps of two seconds).
fn zip(entries: &[Entry], time: u64) -> Result<Vec<u8>, String> {
    let err = |e: zip::result::ZipError| format!("packing the zip archive: {e}");
    let time = i64::try_from(time)
        .ok()
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .ok_or_else(|| format!("the time {time} is out of range"))?;
    let modified = zip::DateTime::try_from(time.naive_utc())
        .map_err(|e| format!("zip cannot store the time {time}: {e}"))?;
    let mut archive = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for entry in entries {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .system(zip::System::Unix)
            .unix_permissions(entry.mode)
            .last_modified_time(modified);
        archive
            .start_file(entry.name.as_str(), options)
            .map_err(err)?;
        archive
            .write_all(&entry.data)
            .map_err(|e| format!("packing the zip archive: {e}"))?;
    }
    Ok(archive.finish().map_err(err)?.into_inner())
}

/// SHA-256 as lowercase hex, as `sha256sum` prints it and krew checks it.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_known_digests() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let long = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        assert_eq!(
            sha256_hex(long),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    #[test]
    fn platforms_follow_krew_names() {
        assert_eq!(
            Platform::from_triple("aarch64-unknown-linux-musl").unwrap(),
            Platform {
                os: "linux",
                arch: "arm64"
            }
        );
        let windows = Platform::from_triple("x86_64-pc-windows-msvc").unwrap();
        assert_eq!(
            windows.archive_name("v1.2.3"),
            "kubectl-calico_harden-v1.2.3-windows-amd64.zip"
        );
        assert!(Platform::from_triple("riscv64gc-unknown-linux-gnu").is_err());
    }

    #[test]
    fn the_template_renders_only_platforms_with_an_archive() {
        let template = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../krew-manifest.yaml"),
        )
        .unwrap();
        let (manifest, kept) = render(&template, "v9.8.7", &|file| {
            (file == "kubectl-calico_harden-v9.8.7-linux-amd64.tar.gz").then(|| "ab".repeat(32))
        })
        .unwrap();
        assert_eq!(kept, ["linux/amd64"]);
        assert!(manifest.contains("  version: v9.8.7\n"), "{manifest}");
        assert!(manifest.contains(
            "    uri: https://github.com/kubectl-calico-harden/kubectl-calico-harden/releases/download/v9.8.7/kubectl-calico_harden-v9.8.7-linux-amd64.tar.gz\n    sha256: abab"
        ), "{manifest}");
        assert!(
            !manifest.contains("darwin") && !manifest.contains("{{"),
            "{manifest}"
        );
        assert!(manifest.contains("completion kubectl --install"));
    }

    #[test]
    fn without_any_archive_rendering_says_what_to_do() {
        let template = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../krew-manifest.yaml"),
        )
        .unwrap();
        let err = render(&template, "v1.0.0", &|_| None).unwrap_err();
        assert!(err.contains("cargo xtask dist"), "{err}");
    }

    /// 2024-02-29 13:45:30 UTC.
    const LEAP_DAY: u64 = 1_709_214_330;

    fn entries() -> Vec<Entry> {
        vec![
            Entry {
                name: "kubectl-calico_harden".into(),
                mode: 0o755,
                data: b"#!/bin/sh\necho plugin\n".repeat(100),
            },
            Entry {
                name: "LICENSE".into(),
                mode: 0o644,
                data: b"Apache License".to_vec(),
            },
        ]
    }

    #[test]
    fn tar_gz_holds_the_files_at_the_root_with_their_modes() {
        let bytes = tar_gz(&entries(), LEAP_DAY).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
        let mut found = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            assert_eq!(header.username().unwrap(), Some("root"));
            assert_eq!(header.uid().unwrap(), 0);
            assert!(header.as_ustar().is_some(), "ustar header");
            assert_eq!(header.mtime().unwrap(), LEAP_DAY);
            found.push((
                entry.path().unwrap().display().to_string(),
                header.mode().unwrap(),
                data,
            ));
        }
        let expected: Vec<_> = entries()
            .into_iter()
            .map(|e| (e.name, e.mode, e.data))
            .collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn zip_holds_the_files_deflated_with_unix_modes_and_the_given_time() {
        let bytes = zip(&entries(), LEAP_DAY).unwrap();
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        assert_eq!(archive.len(), 2);
        for expected in entries() {
            let mut file = archive.by_name(&expected.name).unwrap();
            assert_eq!(file.compression(), zip::CompressionMethod::Deflated);
            assert_eq!(file.unix_mode().map(|m| m & 0o777), Some(expected.mode));
            let modified = file.last_modified().unwrap();
            assert_eq!(
                (modified.year(), modified.month(), modified.day()),
                (2024, 2, 29)
            );
            assert_eq!(
                (modified.hour(), modified.minute(), modified.second()),
                (13, 45, 30)
            );
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut file, &mut data).unwrap();
            assert_eq!(data, expected.data);
        }
    }
}

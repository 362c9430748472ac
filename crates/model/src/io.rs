//! File helpers shared by every phase: atomic writes and hashing.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::InputError;

/// sha256 of a file, lower-case hex, streamed.
pub fn sha256_file(path: &Path) -> Result<String, InputError> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| InputError::new(path, format!("cannot open: {e}")))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| InputError::new(path, format!("cannot read: {e}")))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// `entry`'s stored bytes: `entry.bytes` of them at byte `offset` of the file.
pub(crate) fn read_tensor_at(
    path: &Path,
    offset: u64,
    entry: &crate::TensorEntry,
) -> Result<Vec<u8>, InputError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)
        .map_err(|e| InputError::new(path, format!("cannot open: {e}")))?;
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| InputError::new(path, format!("cannot seek: {e}")))?;
    let mut buf = vec![0u8; entry.bytes as usize];
    f.read_exact(&mut buf)
        .map_err(|e| InputError::new(path, format!("tensor '{}' is short: {e}", entry.name)))?;
    Ok(buf)
}

pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A file being written under a temporary name beside its destination; `commit` renames
/// it into place, dropping it without commit removes it. Readers never see half a file.
pub struct AtomicFile {
    tmp: PathBuf,
    dest: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
}

impl AtomicFile {
    pub fn create(dest: &Path) -> std::io::Result<AtomicFile> {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        let tmp = dest.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let file = std::fs::File::create(&tmp)?;
        Ok(AtomicFile {
            tmp,
            dest: dest.to_path_buf(),
            file: Some(std::io::BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// Where the bytes are until `commit` (to read back what was written so far, after `flush`).
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    pub fn commit(mut self) -> std::io::Result<()> {
        let file = self.file.take().expect("file present until commit");
        // No fsync: the rename guarantees no reader sees a partial file if m2w fails;
        // durability across power loss is the filesystem's job and costs ~2x on big blobs.
        let file = file.into_inner().map_err(|e| e.into_error())?;
        drop(file);
        std::fs::rename(&self.tmp, &self.dest)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.as_mut().expect("open").write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.as_mut().expect("open").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            self.file = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes a whole file atomically (temp file + rename).
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = AtomicFile::create(dest)?;
    f.write_all(bytes)?;
    f.commit()
}

/// Builds a whole output folder under a temporary name beside `out` and swaps it into
/// place only when `fill` succeeds; on failure nothing is left behind and any previous
/// `out` is untouched.
///
/// The swap is one `renameat2(RENAME_EXCHANGE)` on Linux: at every instant `out` is either
/// the whole previous folder or the whole new one, even under `kill -9`. Where the
/// exchange is not available (another OS, a filesystem without it) it is two renames,
/// `out` -> `.out.old-PID` then staging -> `out`; a kill between them leaves no `out` but a
/// whole `.out.old-PID`, which the next run restores. The next run also removes the
/// staging folders (`.out.partial-PID`) and old copies of processes that died.
pub fn replace_dir<T, E>(
    out: &Path,
    io_error: impl Fn(&Path, std::io::Error) -> E,
    fill: impl FnOnce(&Path) -> Result<T, E>,
) -> Result<T, E> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
    let leaf = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    recover_stale(parent, &leaf, out);
    let staging = parent.join(format!(".{leaf}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| io_error(&staging, e))?;
    let value = match fill(&staging) {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if out.exists() {
        match exchange(&staging, out) {
            // The staging name now holds the previous folder.
            Ok(true) => {
                let _ = std::fs::remove_dir_all(&staging);
            }
            Ok(false) => {
                let old = parent.join(format!(".{leaf}.old-{}", std::process::id()));
                std::fs::rename(out, &old).map_err(|e| io_error(out, e))?;
                std::fs::rename(&staging, out).map_err(|e| io_error(out, e))?;
                let _ = std::fs::remove_dir_all(&old);
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(io_error(out, e));
            }
        }
    } else {
        std::fs::rename(&staging, out).map_err(|e| io_error(out, e))?;
    }
    Ok(value)
}

/// Swaps two paths atomically. Ok(false): this system or filesystem cannot (the caller
/// falls back to two renames).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::other(format!("{}: a NUL in the path", p.display())))
    };
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: two valid NUL-terminated paths, relative to the working directory.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => Ok(false),
        _ => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<bool> {
    Ok(false)
}

/// Whether process `pid` still runs (its staging folder may be in use).
fn alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    #[cfg(unix)]
    {
        // SAFETY: signal 0 only checks that the process exists.
        let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
        rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        true
    }
}

/// Cleans what killed runs left beside `out`: staging folders of dead processes are
/// removed; a previous folder moved aside (`.out.old-PID`, the two-rename fallback) is put
/// back when `out` is missing, else removed. Folders of running processes are left alone.
fn recover_stale(parent: &Path, leaf: &str, out: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let partial = format!(".{leaf}.partial-");
    let old = format!(".{leaf}.old-");
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let (kind_old, pid) = if let Some(p) = name.strip_prefix(&partial) {
            (false, p)
        } else if let Some(p) = name.strip_prefix(&old) {
            (true, p)
        } else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if alive(pid) {
            continue;
        }
        if kind_old && !out.exists() && std::fs::rename(e.path(), out).is_ok() {
            continue;
        }
        let _ = std::fs::remove_dir_all(e.path());
    }
}

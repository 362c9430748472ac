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
        let old = parent.join(format!(".{leaf}.old-{}", std::process::id()));
        std::fs::rename(out, &old).map_err(|e| io_error(out, e))?;
        std::fs::rename(&staging, out).map_err(|e| io_error(out, e))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&staging, out).map_err(|e| io_error(out, e))?;
    }
    Ok(value)
}

//! The one error type for bad input: it names the file and says what is wrong.

use std::path::{Path, PathBuf};

/// A problem with an input file (or a folder of them). Callers map it to exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{}: {what}", path.display())]
pub struct InputError {
    pub path: PathBuf,
    pub what: String,
}

impl InputError {
    pub fn new(path: &Path, what: impl Into<String>) -> InputError {
        InputError {
            path: path.to_path_buf(),
            what: what.into(),
        }
    }
}

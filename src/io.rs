//! Safe file I/O shared by every loader and writer (docs/RELIABILITY.md).
//!
//! Inputs are read only from regular files and never past the length the file's metadata
//! declares (a character device such as `/dev/zero` would otherwise be read forever). Outputs
//! are written to a per-process temporary name beside the target and renamed over it, so a
//! reader sees the old or the new file, never half of one, and two writers never share a
//! temporary; an existing target that is not a regular file (a device node, a FIFO, a
//! directory) is refused instead of replaced. [`FileLock`] is an advisory lock that lets one
//! process at a time own a long-running output (an evaluation report).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

/// Upper bound on any file qwm reads whole (model, quantized model, dataset shard): 64 GiB.
/// The real DINO-WM in f32 is about 0.1 GiB; the bound only keeps a corrupt size from being
/// believed.
pub const MAX_FILE_BYTES: u64 = 64 << 30;
/// Upper bound on a JSON file qwm reads (reports, manifests, configs): 1 GiB.
pub const MAX_JSON_BYTES: u64 = 1 << 30;

/// What a path is, in words, for errors about non-regular files.
fn kind_of(ft: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_char_device() {
            return "a character device";
        }
        if ft.is_block_device() {
            return "a block device";
        }
        if ft.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if ft.is_socket() {
            return "a socket";
        }
    }
    if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// Open `path` for reading, refusing anything but a regular file (symbolic links are
/// followed), and return the file with its length.
pub fn open_regular(path: &Path) -> Result<(File, u64)> {
    // Check the type before opening: opening a FIFO for reading blocks until a writer appears.
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::Invalid(format!(
            "{}: is {}, not a regular file; give the path of a file",
            path.display(),
            kind_of(meta.file_type())
        )));
    }
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    // The path may have been swapped between the two calls: check what was opened.
    let meta = f.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::Invalid(format!(
            "{}: is {}, not a regular file",
            path.display(),
            kind_of(meta.file_type())
        )));
    }
    Ok((f, meta.len()))
}

/// Read a whole regular file of at most `max` bytes. The buffer is sized from the file's
/// metadata, and reading stops there even if the file grows meanwhile.
pub fn read_file(path: &Path, max: u64) -> Result<Vec<u8>> {
    let (f, len) = open_regular(path)?;
    if len > max {
        return Err(Error::Invalid(format!(
            "{}: {len} bytes is more than the {max} bytes qwm reads from such a file; is it the \
             right file?",
            path.display()
        )));
    }
    let cap = usize::try_from(len).map_err(|_| {
        Error::Invalid(format!(
            "{}: {len} bytes do not fit in memory",
            path.display()
        ))
    })?;
    let mut buf = Vec::new();
    buf.try_reserve_exact(cap).map_err(|_| {
        Error::Invalid(format!(
            "{}: cannot allocate {len} bytes to read it",
            path.display()
        ))
    })?;
    f.take(len)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(path, e))?;
    Ok(buf)
}

/// [`read_file`] for text (UTF-8) of at most [`MAX_JSON_BYTES`].
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = read_file(path, MAX_JSON_BYTES)?;
    String::from_utf8(bytes).map_err(|e| {
        Error::Invalid(format!(
            "{}: not UTF-8 text (byte {}); is it the right file?",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Check that `path` can be written as a regular file: if it exists it must be one (or a link
/// to one), and its directory must exist. `flag` names the option in errors ("--out").
pub fn check_output(path: &Path, flag: &str) -> Result<()> {
    if let Ok(meta) = std::fs::metadata(path) {
        if !meta.is_file() {
            return Err(Error::Invalid(format!(
                "{flag} {}: is {}; qwm writes regular files only and will not replace it",
                path.display(),
                kind_of(meta.file_type())
            )));
        }
    }
    let dir = parent_dir(path);
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(m) => Err(Error::Invalid(format!(
            "{flag} {}: {} is {}, not a directory",
            path.display(),
            dir.display(),
            kind_of(m.file_type())
        ))),
        Err(_) => Err(Error::Invalid(format!(
            "{flag} {}: the directory {} does not exist; create it first",
            path.display(),
            dir.display()
        ))),
    }
}

/// The directory a file lives in (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A temporary name beside `path`, unique to this process and call: `.NAME.PID.N.tmp`.
fn temp_name(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map_or_else(|| "out".into(), |s| s.to_string_lossy().into_owned());
    parent_dir(path).join(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Write `bytes` to `path` atomically: to a per-process temporary beside it, then renamed over
/// it. Creates the parent directory; refuses to replace anything but a regular file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Ok(meta) = std::fs::metadata(path) {
        if !meta.is_file() {
            return Err(Error::Invalid(format!(
                "{}: is {}; qwm writes regular files only and will not replace it",
                path.display(),
                kind_of(meta.file_type())
            )));
        }
    }
    let dir = parent_dir(path);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let tmp = temp_name(path);
    let res = std::fs::write(&tmp, bytes)
        .map_err(|e| Error::io(&tmp, e))
        .and_then(|_| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// An advisory, exclusive lock on `.NAME.lock` beside a file, held until dropped (or the process
/// ends: the kernel releases it, so a killed run never leaves a stale lock). Cooperating qwm
/// processes take it before they read-modify-write the file.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Take the lock for `path` without waiting; `None` if another process holds it.
    pub fn try_acquire(path: &Path) -> Result<Option<FileLock>> {
        let name = path
            .file_name()
            .map_or_else(|| "out".into(), |s| s.to_string_lossy().into_owned());
        let lock = parent_dir(path).join(format!(".{name}.lock"));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(|e| Error::io(&lock, e))?;
        match f.try_lock() {
            Ok(()) => Ok(Some(FileLock { _file: f })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&lock, e)),
        }
    }

    /// [`Self::try_acquire`], retried for up to two seconds. A writer that holds the lock for
    /// its run is still refused; a lock that only lingers for a moment is not: a child process
    /// that this one (or another thread of it) forks keeps a copy of the descriptor, and with
    /// it the lock, until it execs, so a run that follows a finished one at once can find it
    /// still taken.
    pub fn acquire_patiently(path: &Path) -> Result<Option<FileLock>> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            if let Some(l) = Self::try_acquire(path)? {
                return Ok(Some(l));
            }
            if std::time::Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// Serde for floats that may be NaN or infinite: JSON has no such numbers, so they are written
/// as `null` and `null` reads back as NaN (a report with a NaN statistic stays readable).
pub mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// f32 and f64.
    pub trait Float: Copy + Serialize + for<'a> Deserialize<'a> {
        const NAN: Self;
        fn finite(self) -> bool;
    }
    impl Float for f32 {
        const NAN: Self = f32::NAN;
        fn finite(self) -> bool {
            self.is_finite()
        }
    }
    impl Float for f64 {
        const NAN: Self = f64::NAN;
        fn finite(self) -> bool {
            self.is_finite()
        }
    }

    pub fn serialize<T: Float, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        if v.finite() {
            v.serialize(s)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, T: Float, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        Ok(Option::<T>::deserialize(d)?.unwrap_or(T::NAN))
    }

    /// The same for every element of a `Vec` (or a fixed array through `Vec`).
    pub mod vec {
        use super::Float;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<T: Float, S: Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
            let o: Vec<Option<T>> = v.iter().map(|x| x.finite().then_some(*x)).collect();
            serde::Serialize::serialize(&o, s)
        }

        pub fn deserialize<'de, T: Float, D: Deserializer<'de>>(d: D) -> Result<Vec<T>, D::Error> {
            Ok(Vec::<Option<T>>::deserialize(d)?
                .into_iter()
                .map(|x| x.unwrap_or(T::NAN))
                .collect())
        }
    }

    /// The same for `[f64; 2]`.
    pub mod pair {
        use serde::{de::Error, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(v: &[f64; 2], s: S) -> Result<S::Ok, S::Error> {
            super::vec::serialize(&v[..], s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[f64; 2], D::Error> {
            let v: Vec<f64> = super::vec::deserialize(d)?;
            <[f64; 2]>::try_from(v.as_slice())
                .map_err(|_| D::Error::invalid_length(v.len(), &"two numbers"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_differ_per_call() {
        let p = Path::new("/tmp/x/report.json");
        let (a, b) = (temp_name(p), temp_name(p));
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(Path::new("/tmp/x")));
        assert!(a
            .to_string_lossy()
            .contains(&std::process::id().to_string()));
    }
}

//! The file source: a directory with one file per secret name, the shape of a Kubernetes
//! Secret volume or a CSI mount.
//!
//! A value is the file's bytes with trailing CR/LF trimmed; an empty or absent file is a
//! missing secret. Symlinks are followed, as Kubernetes swaps `..data` links atomically.

use std::collections::HashSet;
use std::io::{ErrorKind, Read};
use std::path::PathBuf;
use std::sync::Mutex;

use zeroize::Zeroizing;

use super::Loaded;
use crate::secrets::Secret;

/// A secret file larger than this is refused rather than read: it is not a credential.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// Reads secrets from files in one directory.
#[derive(Debug)]
pub struct FileSource {
    dir: PathBuf,
    /// What was already warned about (a loose mode, an empty file, a missing directory), so
    /// each is reported once, not every poll.
    warned: Mutex<HashSet<String>>,
}

impl FileSource {
    /// A source over `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir, warned: Mutex::new(HashSet::new()) }
    }

    /// Loads one secret. Names were validated at config load, so they hold no path separator.
    pub fn load(&self, name: &str) -> Loaded {
        let path = self.dir.join(name);
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == ErrorKind::NotFound => {
                if !self.dir.is_dir() {
                    self.warn_once("", || {
                        tracing::error!(
                            dir = %self.dir.display(),
                            "the secret directory (secrets.dir) does not exist or is not a directory"
                        );
                    });
                }
                return Loaded::Missing;
            }
            Err(err) => {
                tracing::error!(secret = name, error = %err.kind(), "cannot open secret file");
                return Loaded::Unavailable;
            }
        };
        match file.metadata() {
            Ok(meta) if meta.len() > MAX_SECRET_BYTES => {
                tracing::error!(secret = name, bytes = meta.len(), "secret file too large");
                return Loaded::Missing;
            }
            Ok(meta) => self.check_mode(name, &meta),
            Err(_) => {}
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(256));
        if let Err(err) = file.take(MAX_SECRET_BYTES).read_to_end(&mut bytes) {
            tracing::error!(secret = name, error = %err.kind(), "cannot read secret file");
            return Loaded::Unavailable;
        }
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        if bytes.is_empty() {
            self.warn_once(name, || tracing::warn!(secret = name, "secret file is empty"));
            return Loaded::Missing;
        }
        Loaded::Value(Secret::new(bytes))
    }

    /// Runs `warn` the first time `key` is warned about (an empty key: the directory).
    fn warn_once(&self, key: &str, warn: impl FnOnce()) {
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if warned.insert(key.to_owned()) {
            warn();
        }
    }

    #[cfg(unix)]
    fn check_mode(&self, name: &str, meta: &std::fs::Metadata) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o004 != 0 {
            self.warn_once(&format!("mode:{name}"), || {
                tracing::warn!(
                    secret = name,
                    "secret file is readable by every user; give it mode 0400 or 0440"
                );
            });
        }
    }

    #[cfg(not(unix))]
    fn check_mode(&self, _name: &str, _meta: &std::fs::Metadata) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempdir::Dir {
        tempdir::Dir::new()
    }

    /// A throwaway directory removed on drop (std only, to keep dev-dependencies small).
    mod tempdir {
        use std::path::{Path, PathBuf};
        use std::sync::atomic::{AtomicUsize, Ordering};

        pub(super) struct Dir(PathBuf);

        impl Dir {
            pub(super) fn new() -> Self {
                static N: AtomicUsize = AtomicUsize::new(0);
                let n = N.fetch_add(1, Ordering::Relaxed);
                let path =
                    std::env::temp_dir().join(format!("keyward-file-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&path).unwrap();
                Self(path)
            }
            pub(super) fn path(&self) -> &Path {
                &self.0
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn value(loaded: Loaded) -> Vec<u8> {
        match loaded {
            Loaded::Value(secret) => secret.expose().to_vec(),
            other => panic!("expected a value, got {other:?}"),
        }
    }

    #[test]
    fn trailing_newlines_are_trimmed() {
        let dir = dir();
        std::fs::write(dir.path().join("k"), "abc\r\n\n").unwrap();
        let source = FileSource::new(dir.path().into());
        assert_eq!(value(source.load("k")), b"abc");
    }

    #[test]
    fn inner_whitespace_is_kept() {
        let dir = dir();
        std::fs::write(dir.path().join("k"), " a b\n").unwrap();
        assert_eq!(value(FileSource::new(dir.path().into()).load("k")), b" a b");
    }

    #[test]
    fn empty_and_absent_files_are_missing() {
        let dir = dir();
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let source = FileSource::new(dir.path().into());
        assert!(matches!(source.load("empty"), Loaded::Missing));
        assert!(matches!(source.load("absent"), Loaded::Missing));
    }

    #[test]
    fn oversize_files_are_refused() {
        let dir = dir();
        std::fs::write(dir.path().join("big"), vec![b'a'; 70_000]).unwrap();
        assert!(matches!(FileSource::new(dir.path().into()).load("big"), Loaded::Missing));
    }

    #[cfg(unix)]
    #[test]
    fn symlinked_files_are_followed() {
        let dir = dir();
        std::fs::create_dir(dir.path().join("..data")).unwrap();
        std::fs::write(dir.path().join("..data/k"), "linked").unwrap();
        std::os::unix::fs::symlink("..data/k", dir.path().join("k")).unwrap();
        assert_eq!(value(FileSource::new(dir.path().into()).load("k")), b"linked");
    }

    #[cfg(unix)]
    #[test]
    fn an_unreadable_directory_is_unavailable_not_missing() {
        let dir = dir();
        // A path through a regular file fails with ENOTDIR: the source cannot answer.
        std::fs::write(dir.path().join("file"), "x").unwrap();
        let source = FileSource::new(dir.path().join("file"));
        assert!(matches!(source.load("k"), Loaded::Unavailable));
    }
}

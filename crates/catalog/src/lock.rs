//! The lock a model directory is written under: one `flock` per model id in the base
//! directory's lock folder, so that xtask's `models download`/`delete` and a pool manager's
//! download never write the same model at once. Released when dropped (or when the process
//! dies: the kernel drops a dead process's flock).

use std::{fs::File, io, os::fd::AsRawFd, path::Path};

use crate::lock_path;

/// An exclusive lock on one model id, held while it lives.
pub struct ModelLock {
    file: File,
}

impl ModelLock {
    /// Takes the lock if it is free; `None` when another process holds it.
    pub fn try_acquire(base: &Path, id: &str) -> io::Result<Option<ModelLock>> {
        let lock = ModelLock::open(base, id)?;
        Ok(lock
            .flock(libc::LOCK_EX | libc::LOCK_NB, base, id)?
            .then_some(lock))
    }

    /// Waits for the lock.
    pub fn acquire(base: &Path, id: &str) -> io::Result<ModelLock> {
        let lock = ModelLock::open(base, id)?;
        match lock.flock(libc::LOCK_EX, base, id)? {
            true => Ok(lock),
            false => Err(io::Error::other(format!(
                "locking {}: the lock was refused",
                lock_path(base, id).display()
            ))),
        }
    }

    fn open(base: &Path, id: &str) -> io::Result<ModelLock> {
        let path = lock_path(base, id);
        let dir = path.parent().expect("lock paths have a parent");
        std::fs::create_dir_all(dir).map_err(|error| with_path("creating", dir, error))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|error| with_path("opening the lock file", &path, error))?;
        Ok(ModelLock { file })
    }

    /// True when taken; false when `LOCK_NB` found it held.
    fn flock(&self, operation: libc::c_int, base: &Path, id: &str) -> io::Result<bool> {
        // SAFETY: flock on a descriptor this struct owns; it touches no memory.
        let result = unsafe { libc::flock(self.file.as_raw_fd(), operation) };
        if result == 0 {
            return Ok(true);
        }
        let error = io::Error::last_os_error();
        if error.kind() == io::ErrorKind::WouldBlock {
            return Ok(false);
        }
        Err(with_path("locking", &lock_path(base, id), error))
    }
}

fn with_path(what: &str, path: &Path, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{what} {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_refused_to_a_second_holder_until_dropped() {
        let base = tempfile::tempdir().unwrap();
        let first = ModelLock::try_acquire(base.path(), "m").unwrap();
        assert!(first.is_some());
        assert!(ModelLock::try_acquire(base.path(), "m").unwrap().is_none());
        assert!(ModelLock::try_acquire(base.path(), "other")
            .unwrap()
            .is_some());
        drop(first);
        assert!(ModelLock::acquire(base.path(), "m").is_ok());
    }
}

//! `manifest.json` beside a downloaded model: which files make it up, their sizes and SHA-256
//! as computed after the download, and where they came from. A model directory without a
//! manifest is not a finished download.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub id: String,
    /// The model file (one of `files`).
    pub file: String,
    pub files: Vec<ManifestFile>,
    /// The catalog's source line at download time (`hf:owner/name@main`, `pip:a==1, ...`).
    pub source: String,
    /// RFC 3339 UTC time the download finished.
    pub downloaded_at: String,
    /// The converter invocation, for models converted after download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converted_with: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid manifest: {source}\nhint: run `cargo xtask models download {id} --force` to download the model again")]
    Parse {
        path: PathBuf,
        id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Manifest {
    pub fn path(model_dir: &Path) -> PathBuf {
        model_dir.join(MANIFEST_FILE)
    }

    /// The manifest in `model_dir`, or `None` when there is none.
    pub fn read(model_dir: &Path) -> Result<Option<Manifest>, ManifestError> {
        let path = Manifest::path(model_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ManifestError::Read { path, source }),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| ManifestError::Parse {
                id: model_dir
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                path,
                source,
            })
    }

    /// Writes the manifest through a temporary file and a rename, so a reader sees the old
    /// manifest or the new one, never half of one.
    pub fn write(&self, model_dir: &Path) -> Result<(), ManifestError> {
        let path = Manifest::path(model_dir);
        let temporary = model_dir.join(format!(".{MANIFEST_FILE}.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&temporary)?;
            let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
            file.write_all(text.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            std::fs::rename(&temporary, &path)
        };
        write().map_err(|source| {
            let _ = std::fs::remove_file(&temporary);
            ManifestError::Write {
                path: path.clone(),
                source,
            }
        })
    }

    /// The entry for the model file itself.
    pub fn main_file(&self) -> Option<&ManifestFile> {
        self.files.iter().find(|file| file.name == self.file)
    }

    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|file| file.size).sum()
    }
}

/// `time` as an RFC 3339 UTC timestamp (`2025-01-31T12:00:00Z`).
pub fn utc_timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap_day = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_661);
        assert_eq!(utc_timestamp(leap_day), "2000-02-29T01:01:01Z");
        let new_year = UNIX_EPOCH + Duration::from_secs(1_735_689_599);
        assert_eq!(utc_timestamp(new_year), "2024-12-31T23:59:59Z");
    }

    #[test]
    fn manifest_round_trips_and_absence_is_none() {
        let dir = std::env::temp_dir().join(format!("llorch-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::remove_file(Manifest::path(&dir)).ok();
        assert_eq!(Manifest::read(&dir).unwrap(), None);
        let manifest = Manifest {
            id: "tiny".into(),
            file: "tiny.gguf".into(),
            files: vec![ManifestFile {
                name: "tiny.gguf".into(),
                size: 4,
                sha256: "ab".repeat(32),
            }],
            source: "hf:o/tiny@main".into(),
            downloaded_at: utc_timestamp(SystemTime::now()),
            converted_with: None,
        };
        manifest.write(&dir).unwrap();
        let back = Manifest::read(&dir).unwrap().unwrap();
        assert_eq!(back, manifest);
        assert_eq!(back.main_file().unwrap().size, 4);
        assert_eq!(back.total_size(), 4);
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from(MANIFEST_FILE)]);

        std::fs::write(Manifest::path(&dir), "{").unwrap();
        let error = Manifest::read(&dir).unwrap_err().to_string();
        assert!(error.contains("not a valid manifest"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

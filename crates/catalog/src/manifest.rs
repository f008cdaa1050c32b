//! `manifest.json` beside a downloaded model: which files make it up, their sizes and SHA-256
//! as computed after the download, and where they came from. A model directory without a
//! manifest is not a finished download.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
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

/// `time` as an RFC 3339 UTC timestamp (`2025-01-31T12:00:00Z`), without a date crate.
pub fn utc_timestamp(time: SystemTime) -> String {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    // Howard Hinnant's days-to-civil algorithm, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3_600,
        second_of_day % 3_600 / 60,
        second_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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

//! What is on disk under the model base dir: which models are downloaded, their files, their
//! disk usage and any unfinished download. Hidden entries (`.partial/`, `.locks/`) are never
//! taken for models.

use std::path::{Path, PathBuf};

use llorch_catalog::{model_dir, Manifest, MANIFEST_FILE, PARTIAL_DIR};
use serde::Serialize;

/// The quick check behind `download`'s skip and [`super::ensure_downloaded`] (no hashing:
/// `models verify` re-reads the bytes); the pool manager's downloads make the same one.
pub use llorch_fetch::installed;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Manifest present, every recorded file present with its recorded size.
    Ready,
    /// A manifest whose files are missing or have another size.
    Damaged,
    /// Files without a manifest (copied by hand, or a download cut off while finishing).
    Unrecorded,
    /// Only an unfinished download.
    Incomplete,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ready => "ready",
            Status::Damaged => "damaged",
            Status::Unrecorded => "no manifest",
            Status::Incomplete => "incomplete",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LocalFile {
    pub name: String,
    pub size: u64,
}

/// One directory under the model base dir.
#[derive(Debug, Clone, Serialize)]
pub struct LocalModel {
    pub id: String,
    pub dir: PathBuf,
    pub status: Status,
    #[serde(skip)]
    pub manifest: Option<Manifest>,
    /// Why the manifest could not be read, when it exists but is broken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_error: Option<String>,
    /// Regular files in the directory, except the manifest.
    pub files: Vec<LocalFile>,
    /// Everything under the directory, unfinished download included.
    pub disk_usage: u64,
    /// Bytes of an unfinished download (`.partial/`).
    pub partial_bytes: u64,
}

/// The model directory `id`, or `None` when it does not exist.
pub fn inspect(base: &Path, id: &str) -> Option<LocalModel> {
    let dir = model_dir(base, id);
    if !dir.is_dir() {
        return None;
    }
    let (manifest, manifest_error) = match Manifest::read(&dir) {
        Ok(manifest) => (manifest, None),
        Err(error) => (None, Some(error.to_string())),
    };
    let mut files: Vec<LocalFile> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|item| {
            let name = item.file_name().to_string_lossy().into_owned();
            let metadata = item.metadata().ok()?;
            (metadata.is_file() && !name.starts_with('.') && name != MANIFEST_FILE).then_some(
                LocalFile {
                    name,
                    size: metadata.len(),
                },
            )
        })
        .collect();
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let status = match &manifest {
        Some(manifest) => {
            let intact = manifest.files.iter().all(|recorded| {
                files
                    .iter()
                    .any(|file| file.name == recorded.name && file.size == recorded.size)
            });
            if intact {
                Status::Ready
            } else {
                Status::Damaged
            }
        }
        None if files.is_empty() && manifest_error.is_none() => Status::Incomplete,
        None => Status::Unrecorded,
    };
    Some(LocalModel {
        id: id.to_owned(),
        status,
        manifest,
        manifest_error,
        files,
        disk_usage: dir_size(&dir),
        partial_bytes: dir_size(&dir.join(PARTIAL_DIR)),
        dir,
    })
}

/// Every model directory under `base`, sorted by id; an absent base dir holds none.
pub fn scan(base: &Path) -> Vec<LocalModel> {
    let mut ids: Vec<String> = std::fs::read_dir(base)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|item| item.file_type().is_ok_and(|kind| kind.is_dir()))
        .map(|item| item.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    ids.sort();
    ids.iter()
        .filter_map(|id| inspect(base, id))
        // An empty directory (a rejected download's leftover) holds no model.
        .filter(|model| model.disk_usage > 0 || model.manifest.is_some())
        .collect()
}

/// Bytes of every regular file under `path` (symbolic links are not followed).
pub fn dir_size(path: &Path) -> u64 {
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if metadata.is_file() {
        return metadata.len();
    }
    if !metadata.is_dir() {
        return 0;
    }
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|item| dir_size(&item.path()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use llorch_catalog::{Catalog, ManifestFile};

    fn write_model(base: &Path, id: &str, file: &str, bytes: &[u8], sha256: &str) {
        let dir = model_dir(base, id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(file), bytes).unwrap();
        Manifest {
            id: id.into(),
            file: file.into(),
            files: vec![ManifestFile {
                name: file.into(),
                size: bytes.len() as u64,
                sha256: sha256.into(),
            }],
            source: "test".into(),
            downloaded_at: "2025-01-01T00:00:00Z".into(),
            converted_with: None,
        }
        .write(&dir)
        .unwrap();
    }

    #[test]
    fn scan_classifies_directories_and_ignores_hidden_ones() {
        let base = tempfile::tempdir().unwrap();
        let base = base.path();
        write_model(base, "ready", "r.gguf", b"1234", &"a".repeat(64));
        write_model(base, "damaged", "d.gguf", b"1234", &"a".repeat(64));
        std::fs::write(base.join("damaged/d.gguf"), b"12").unwrap();
        std::fs::create_dir_all(base.join("handmade")).unwrap();
        std::fs::write(base.join("handmade/h.gguf"), b"x").unwrap();
        std::fs::create_dir_all(base.join("cutoff/.partial")).unwrap();
        std::fs::write(base.join("cutoff/.partial/c.gguf.assembling"), b"xyz").unwrap();
        std::fs::create_dir_all(base.join(".locks")).unwrap();
        std::fs::create_dir_all(base.join("empty/.partial")).unwrap();

        let found = scan(base);
        let summary: Vec<(&str, Status)> =
            found.iter().map(|m| (m.id.as_str(), m.status)).collect();
        assert_eq!(
            summary,
            vec![
                ("cutoff", Status::Incomplete),
                ("damaged", Status::Damaged),
                ("handmade", Status::Unrecorded),
                ("ready", Status::Ready)
            ]
        );
        let cutoff = &found[0];
        assert!(cutoff.files.is_empty(), "partial files are not model files");
        assert_eq!((cutoff.partial_bytes, cutoff.disk_usage), (3, 3));
        let ready = &found[3];
        assert_eq!(ready.files.len(), 1);
        assert!(
            ready.disk_usage > 4,
            "the manifest counts towards disk usage"
        );
        assert!(scan(&base.join("absent")).is_empty());
    }

    #[test]
    fn installed_needs_a_matching_manifest_and_size() {
        let text = "[[models]]\nid = \"m\"\nname = \"M\"\ndescription = \"d\"\nparams = \"1\"\nfile = \"m.gguf\"\nsize = 4\nsha256 = \"".to_owned()
            + &"b".repeat(64)
            + "\"\nverified = true\ndefault = true\nsource = { kind = \"hf\", repo = \"o/m\" }\n";
        let catalog = Catalog::parse(&text, "t.toml").unwrap();
        let entry = catalog.get("m").unwrap();
        let base = tempfile::tempdir().unwrap();
        let base = base.path();
        assert!(installed(base, entry).is_none());

        write_model(base, "m", "m.gguf", b"1234", &"a".repeat(64));
        assert!(
            installed(base, entry).is_none(),
            "recorded hash differs from the pin"
        );

        write_model(base, "m", "m.gguf", b"1234", &"b".repeat(64));
        assert_eq!(installed(base, entry).unwrap().path, base.join("m/m.gguf"));

        std::fs::write(base.join("m/m.gguf"), b"123").unwrap();
        assert!(
            installed(base, entry).is_none(),
            "size differs from the manifest"
        );
    }
}

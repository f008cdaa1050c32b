//! The user catalog: every `*.toml` in `catalog.d/` beside the config file
//! (`~/.config/llorch/catalog.d/`), merged after the built-in (or configured) catalog. Entries
//! written by `models download hf:...` and `models add` land here, one file per id.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::{Catalog, CatalogError, Diagnostic, ModelEntry};

/// Name of the user catalog directory beside the config file.
pub const USER_CATALOG_DIR: &str = "catalog.d";

impl Catalog {
    /// Adds the entries of every `*.toml` file in `dir`, in file-name order, after this
    /// catalog's own. An absent directory adds nothing. Every unreadable or malformed file is
    /// reported (file and line), not just the first; ids are checked by [`Catalog::validate`].
    pub fn with_user_dir(mut self, dir: &Path) -> Result<Catalog, CatalogError> {
        let listing = match std::fs::read_dir(dir) {
            Ok(listing) => listing,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(self),
            Err(source) => {
                return Err(CatalogError::Io {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        };
        let mut files: Vec<PathBuf> = listing
            .flatten()
            .map(|item| item.path())
            .filter(|path| {
                path.extension().is_some_and(|ext| ext == "toml")
                    && !path
                        .file_name()
                        .is_some_and(|name| name.to_string_lossy().starts_with('.'))
            })
            .collect();
        files.sort();
        let mut diagnostics: Vec<Diagnostic> = Vec::new();
        for file in files {
            match Catalog::load(&file) {
                Ok(user) => {
                    self.models.extend(user.models);
                    self.lines.extend(user.lines);
                    self.origins.extend(user.origins);
                    self.user_files.push(file);
                }
                Err(error) => diagnostics.extend(error.diagnostics()),
            }
        }
        if diagnostics.is_empty() {
            Ok(self)
        } else {
            Err(CatalogError::Entries {
                origin: dir.display().to_string(),
                diagnostics,
            })
        }
    }

    /// The `catalog.d` files merged into this catalog.
    pub fn user_files(&self) -> &[PathBuf] {
        &self.user_files
    }

    /// Every entry with the file it came from, in catalog order.
    pub fn entries_with_origins(&self) -> impl Iterator<Item = (&ModelEntry, &str)> {
        self.models
            .iter()
            .zip(self.origins.iter().map(String::as_str))
    }

    /// Whether `origin` (as [`Catalog::origin_of`] gives it) is a merged `catalog.d` file.
    pub fn is_user_origin(&self, origin: &str) -> bool {
        self.user_files
            .iter()
            .any(|file| file.display().to_string() == origin)
    }

    /// The file the entry `id` came from (the first one, if the id is duplicated).
    pub fn origin_of(&self, id: &str) -> Option<&str> {
        self.models
            .iter()
            .position(|entry| entry.id == id)
            .map(|index| self.origins[index].as_str())
    }
}

/// The file `models download hf:...` and `models add` write for `id`.
pub fn user_entry_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.toml"))
}

#[derive(Serialize)]
struct UserFile<'a> {
    models: [&'a ModelEntry; 1],
}

/// The text of a one-entry catalog file.
pub fn user_entry_text(entry: &ModelEntry, comment: &str) -> String {
    let body = toml::to_string(&UserFile { models: [entry] })
        .expect("a catalog entry always serializes to TOML");
    let comment: String = comment.lines().map(|line| format!("# {line}\n")).collect();
    format!("{comment}{body}")
}

/// Writes `entry` to `catalog.d/<id>.toml` through a temporary file and a rename, so readers
/// see the old file or the new one, never half of one. Returns the file written.
pub fn write_user_entry(dir: &Path, entry: &ModelEntry, comment: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = user_entry_path(dir, &entry.id);
    // Hidden and not `.toml`, so a concurrent reader never merges the unfinished file.
    let temporary = dir.join(format!(".{}.{}.tmp", entry.id, std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(user_entry_text(entry, comment).as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{tests::MINIMAL, Severity, Source};

    fn user_entry(id: &str) -> String {
        MINIMAL
            .replace("id = \"tiny\"", &format!("id = \"{id}\""))
            .replace("default = true\n", "")
    }

    #[test]
    fn user_files_merge_after_the_base_with_their_origin() {
        let dir = tempfile_dir("merge");
        std::fs::write(dir.join("b.toml"), user_entry("second")).unwrap();
        std::fs::write(dir.join("a.toml"), user_entry("first")).unwrap();
        std::fs::write(dir.join("notes.txt"), "not a catalog").unwrap();
        let catalog = Catalog::parse(MINIMAL, "base.toml")
            .unwrap()
            .with_user_dir(&dir)
            .unwrap();
        let ids: Vec<&str> = catalog.models().iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["tiny", "first", "second"]);
        assert_eq!(catalog.origin_of("tiny"), Some("base.toml"));
        let a = dir.join("a.toml").display().to_string();
        assert_eq!(catalog.origin_of("first"), Some(a.as_str()));
        assert_eq!(catalog.user_files().len(), 2);
        assert!(catalog.validate().is_empty(), "{:?}", catalog.validate());
        assert_eq!(catalog.default_model().id, "tiny");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_absent_dir_adds_nothing() {
        let catalog = Catalog::parse(MINIMAL, "base.toml")
            .unwrap()
            .with_user_dir(Path::new("/nonexistent/catalog.d"))
            .unwrap();
        assert_eq!(catalog.models().len(), 1);
    }

    #[test]
    fn a_duplicate_id_names_both_files() {
        let dir = tempfile_dir("dup");
        std::fs::write(dir.join("mine.toml"), format!("\n\n{}", user_entry("tiny"))).unwrap();
        let catalog = Catalog::parse(MINIMAL, "base.toml")
            .unwrap()
            .with_user_dir(&dir)
            .unwrap();
        let found = catalog.validate();
        assert_eq!(found.len(), 1, "{found:#?}");
        let text = found[0].to_string();
        let mine = dir.join("mine.toml").display().to_string();
        assert!(
            text.starts_with(&format!("{mine}:4: error: model `tiny`")),
            "{text}"
        );
        assert!(text.contains("already defined in base.toml:2"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn malformed_files_are_all_reported_with_file_and_line() {
        let dir = tempfile_dir("bad");
        std::fs::write(dir.join("a.toml"), "[[models]]\nid = \n").unwrap();
        std::fs::write(
            dir.join("b.toml"),
            user_entry("b").replace("size = 1024\n", ""),
        )
        .unwrap();
        let error = Catalog::parse(MINIMAL, "base.toml")
            .unwrap()
            .with_user_dir(&dir)
            .unwrap_err();
        let diagnostics = error.diagnostics();
        assert_eq!(diagnostics.len(), 2, "{diagnostics:#?}");
        assert!(diagnostics.iter().all(|d| d.severity == Severity::Error));
        let a = diagnostics[0].to_string();
        assert!(a.contains("a.toml") && a.contains("line 2"), "{a}");
        let b = diagnostics[1].to_string();
        assert!(
            b.contains(&format!("{}:2:", dir.join("b.toml").display())),
            "{b}"
        );
        assert!(b.contains("missing field `size`"), "{b}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn written_entries_read_back_and_leave_no_temporary_file() {
        let dir = tempfile_dir("write");
        let base = Catalog::parse(MINIMAL, "base.toml").unwrap();
        let mut entry = base.get("tiny").unwrap().clone();
        entry.id = "mine".into();
        entry.default = false;
        entry.source = Source::Local(crate::LocalSource {
            path: "/data/mine.gguf".into(),
        });
        let path = write_user_entry(&dir, &entry, "added by a test\nsecond line").unwrap();
        assert_eq!(path, dir.join("mine.toml"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# added by a test\n# second line\n"),
            "{text}"
        );
        let merged = base.with_user_dir(&dir).unwrap();
        assert_eq!(merged.get("mine"), Some(&entry));
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|item| item.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("mine.toml")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("llorch-user-catalog-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

//! Tests of every path through the catalog's parsing: the catalog file and `catalog.d`, entries
//! and their sources, validation, manifests and GGUF headers. Each checks what a user sees (the
//! message names the file, line, field and fix) or the value parsed, through the public API.

mod catalog;
mod entry;
pub(crate) mod gguf;
mod manifest;
mod user;
mod validate;

use crate::{tests::MINIMAL, Catalog};

/// The messages `validate` gives for catalog text, one `origin:line: severity: ...` each.
pub(crate) fn diagnostics_of(text: &str) -> Vec<String> {
    Catalog::parse(text, "t.toml")
        .unwrap()
        .validate()
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// [`MINIMAL`] with its `source` replaced.
fn with_source(source: &str) -> String {
    MINIMAL.replace(
        "source = { kind = \"hf\", repo = \"example/tiny-GGUF\" }",
        &format!("source = {source}"),
    )
}

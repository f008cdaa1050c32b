//! Validation: every rule names the entry, its line and the field, and says what is expected.

use super::{diagnostics_of, with_source, MINIMAL};
use crate::{valid_id, Diagnostic, Severity};

/// The one diagnostic `text` gets, or a panic listing them all.
fn only_diagnostic(text: &str) -> String {
    let found = diagnostics_of(text);
    assert_eq!(found.len(), 1, "{found:#?}");
    found.into_iter().next().unwrap()
}

#[test]
fn a_blank_name_is_an_error() {
    let text = MINIMAL.replace("name = \"Tiny test model\"", "name = \"  \"");
    assert_eq!(
        only_diagnostic(&text),
        "t.toml:2: error: model `tiny`: `name` is empty"
    );
}

#[test]
fn the_file_must_be_a_gguf_file() {
    let text = MINIMAL.replace("file = \"tiny.gguf\"", "file = \"tiny.bin\"");
    assert_eq!(
        only_diagnostic(&text),
        "t.toml:2: error: model `tiny`: `file` `tiny.bin` must be a `.gguf` file"
    );
    for unsafe_name in ["", ".hidden.gguf", "a\\\\b.gguf", "manifest.json"] {
        let text = MINIMAL.replace("file = \"tiny.gguf\"", &format!("file = \"{unsafe_name}\""));
        assert!(
            only_diagnostic(&text).contains("must be a plain file name inside the model directory"),
            "{unsafe_name}"
        );
    }
}

#[test]
fn a_zero_size_is_an_error() {
    let text = MINIMAL.replace("size = 1024", "size = 0");
    assert_eq!(
        only_diagnostic(&text),
        "t.toml:2: error: model `tiny`: `size` must be the file's size in bytes, not 0"
    );
}

#[test]
fn a_good_sha256_is_accepted_and_a_short_one_refused() {
    let pinned = MINIMAL.replace(
        "size = 1024",
        &format!("size = 1024\nsha256 = \"{}\"", "0f".repeat(32)),
    );
    assert!(
        diagnostics_of(&pinned).is_empty(),
        "{:?}",
        diagnostics_of(&pinned)
    );
    let short = MINIMAL.replace("size = 1024", "size = 1024\nsha256 = \"0f0f\"");
    assert!(only_diagnostic(&short).ends_with("`sha256` `0f0f` is not 64 lowercase hex digits"));
}

#[test]
fn the_repo_must_be_owner_and_name() {
    for repo in ["a/b/c", "/b", "a/", ".a/b", "a/b c"] {
        let text = with_source(&format!("{{ kind = \"hf\", repo = \"{repo}\" }}"));
        assert!(
            only_diagnostic(&text)
                .ends_with(&format!("`source.repo` `{repo}` is not `owner/name`")),
            "{repo}"
        );
    }
}

#[test]
fn the_revision_must_be_plain() {
    for revision in ["", "refs/heads/main", "my branch"] {
        let text = with_source(&format!(
            "{{ kind = \"hf\", repo = \"o/a\", revision = \"{revision}\" }}"
        ));
        assert!(
            only_diagnostic(&text).ends_with(&format!(
                "`source.revision` `{revision}` is not a plain branch, tag or commit"
            )),
            "{revision}"
        );
    }
}

/// [`MINIMAL`] as a converted model with `converter` and `files` as given.
fn converted(converter: &str, files: &str) -> String {
    MINIMAL
        .replace(
            "verified = true",
            &format!("verified = true\nrequires_conversion = true\nconverter = \"{converter}\""),
        )
        .replace(
            "repo = \"example/tiny-GGUF\"",
            &format!("repo = \"example/tiny\", files = [{files}]"),
        )
}

#[test]
fn a_conversion_reads_plain_files_with_a_python_converter() {
    let foldered = converted("convert_hf_to_gguf.py", "\"sub/model.safetensors\"");
    assert!(only_diagnostic(&foldered).ends_with(
        "`source.files` entry `sub/model.safetensors` must be a plain file name (or `folder/name` for a GGUF)"
    ));
    for converter in ["convert.sh", "../convert.py"] {
        let text = converted(converter, "\"model.safetensors\"");
        assert!(
            only_diagnostic(&text).ends_with(&format!(
                "`converter` `{converter}` must be a script name such as `convert_hf_to_gguf.py`"
            )),
            "{converter}"
        );
    }
    let pinned = converted("convert_hf_to_gguf.py", "\"model.safetensors\"").replace(
        "size = 1024",
        &format!("size = 1024\nsha256 = \"{}\"", "0f".repeat(32)),
    );
    assert!(only_diagnostic(&pinned).ends_with(
        "a converted file's bytes depend on the converter version; do not pin `sha256`"
    ));
}

#[test]
fn converter_args_without_a_conversion_are_an_error() {
    let text = MINIMAL.replace(
        "verified = true",
        "verified = true\nconverter_args = [\"--outtype\", \"f16\"]",
    );
    assert!(only_diagnostic(&text)
        .ends_with("`converter_args` is set but `requires_conversion` is not"));
}

#[test]
fn local_and_pip_sources_cannot_be_converted() {
    let conversion =
        "verified = true\nrequires_conversion = true\nconverter = \"convert_hf_to_gguf.py\"";
    let local = with_source("{ kind = \"local\", path = \"/data/t.gguf\" }")
        .replace("verified = true", conversion);
    assert!(only_diagnostic(&local)
        .ends_with("local sources are GGUF files and cannot `requires_conversion`"));
    let pip = with_source("{ kind = \"pip\", packages = [\"t==1\"] }")
        .replace("verified = true", conversion)
        .replace(
            "size = 1024",
            &format!("size = 1024\nsha256 = \"{}\"", "0f".repeat(32)),
        );
    let found = diagnostics_of(&pip);
    assert!(
        found.iter().any(|d| d
            .ends_with("pip sources are assembled GGUF files and cannot `requires_conversion`")),
        "{found:#?}"
    );
}

#[test]
fn a_diagnostic_without_line_or_model_prints_origin_and_message() {
    let warning = Diagnostic {
        severity: Severity::Warning,
        origin: "t.toml".into(),
        line: None,
        model: None,
        message: "look".into(),
    };
    assert_eq!(warning.to_string(), "t.toml: warning: look");
    assert!(!warning.is_error());
    let json = serde_json::to_value(&warning).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"severity": "warning", "origin": "t.toml", "message": "look"})
    );
}

#[test]
fn ids_are_lowercase_names_without_dot_dot() {
    for good in ["gemma3-270m", "qwen2.5-coder-0.5b", "7b_q4"] {
        assert!(valid_id(good), "{good}");
    }
    for bad in ["", "Gemma", "-x", ".x", "a..b", "a/b", "a b"] {
        assert!(!valid_id(bad), "{bad}");
    }
}

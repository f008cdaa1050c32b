//! Models that `requires_conversion`: the tools are checked before any download, a failing
//! converter leaves no model file, and a working one (a stand-in for llama.cpp's
//! convert_hf_to_gguf.py in a fake LLAMA_CPP_DIR) produces a recorded GGUF.

use crate::models_support;

use models_support::{pseudo_random_bytes, FakeHub, Sandbox};

const REPO: &str = "test-org/tiny-safetensors";
const FILE: &str = "tiny-f16.gguf";
const CONFIG: &[u8] = br#"{"architectures": ["GPT2LMHeadModel"], "n_layer": 2}"#;

const CATALOG: &str = r#"
[[models]]
id = "tiny-convert"
name = "Tiny (F16, converted)"
description = "converted in the test"
params = "1M"
file = "tiny-f16.gguf"
size = 400000
verified = true
default = true
requires_conversion = true
converter = "convert_hf_to_gguf.py"
converter_args = ["--outtype", "f16"]
source = { kind = "hf", repo = "test-org/tiny-safetensors", files = ["config.json", "model.safetensors"] }
"#;

/// Argument handling like the real converter; fails halfway when a `fail` file sits beside it.
const FAKE_CONVERTER: &str = r#"
import argparse, os, sys
parser = argparse.ArgumentParser()
parser.add_argument("model")
parser.add_argument("--outfile", required=True)
parser.add_argument("--outtype", default="f32")
args = parser.parse_args()
out = open(args.outfile, "wb")
out.write(b"GGUF")
if os.path.exists(os.path.join(os.path.dirname(__file__), "fail")):
    out.write(b"half a file")
    out.close()
    print("error: conversion failed halfway", file=sys.stderr)
    sys.exit(3)
print("converting", args.model)
out.write(args.outtype.encode())
out.write(open(os.path.join(args.model, "config.json"), "rb").read())
out.write(open(os.path.join(args.model, "model.safetensors"), "rb").read())
out.close()
"#;

struct Setup {
    hub: FakeHub,
    sandbox: Sandbox,
    weights: Vec<u8>,
}

fn setup() -> Setup {
    let hub = FakeHub::start();
    let weights = pseudo_random_bytes(300_000, 7);
    hub.add_file(REPO, "config.json", CONFIG.to_vec());
    hub.add_file(REPO, "model.safetensors", weights.clone());
    let mut sandbox = Sandbox::new(CATALOG);
    sandbox.set_env("HF_ENDPOINT", hub.url());
    Setup {
        hub,
        sandbox,
        weights,
    }
}

fn fake_llama_cpp(sandbox: &mut Sandbox, script: &str) -> std::path::PathBuf {
    let dir = sandbox.dir.path().join("llama.cpp");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("convert_hf_to_gguf.py"), script).unwrap();
    sandbox.set_env("LLAMA_CPP_DIR", dir.display().to_string());
    dir
}

#[test]
fn missing_conversion_tools_are_named_before_anything_is_downloaded() {
    let mut setup = setup();
    let run = setup.sandbox.xtask(&["models", "download"]);
    run.assert_failure();
    assert!(
        run.stderr
            .contains("must be converted to GGUF with llama.cpp's convert_hf_to_gguf.py"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("missing: LLAMA_CPP_DIR is not set"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("requirements-convert_hf_to_gguf.txt"),
        "{}",
        run.stderr
    );

    fake_llama_cpp(&mut setup.sandbox, "import torch_is_not_installed_here\n");
    let run = setup.sandbox.xtask(&["models", "download"]);
    run.assert_failure();
    assert!(
        run.stderr
            .contains("missing: the Python module 'torch_is_not_installed_here'"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("nothing was downloaded"),
        "{}",
        run.stderr
    );

    assert!(
        setup.hub.requests().is_empty(),
        "{:?}",
        setup.hub.requests()
    );
    assert_eq!(setup.sandbox.files(), Vec::<String>::new());
}

#[test]
fn a_failed_conversion_leaves_no_model_and_the_retry_reuses_the_sources() {
    let mut setup = setup();
    let llama_cpp = fake_llama_cpp(&mut setup.sandbox, FAKE_CONVERTER);
    std::fs::write(llama_cpp.join("fail"), "").unwrap();

    let failed = setup.sandbox.xtask(&["models", "download", "tiny-convert"]);
    failed.assert_failure();
    assert!(
        failed.stderr.contains("conversion failed halfway"),
        "{}",
        failed.stderr
    );
    assert_eq!(
        setup.sandbox.files(),
        vec![
            "tiny-convert/.partial/source/config.json".to_owned(),
            "tiny-convert/.partial/source/model.safetensors".to_owned()
        ],
        "only the downloaded sources may remain"
    );
    assert_eq!(
        setup
            .sandbox
            .xtask(&["models", "verify", "tiny-convert"])
            .status
            .code(),
        Some(1)
    );

    std::fs::remove_file(llama_cpp.join("fail")).unwrap();
    setup.hub.clear_requests();
    let converted = setup.sandbox.xtask(&["models", "download", "tiny-convert"]);
    converted.assert_success();
    assert!(
        setup.hub.requests().is_empty(),
        "sources fetched again: {:?}",
        setup.hub.requests()
    );

    let dir = setup.sandbox.model_dir("tiny-convert");
    let mut expected = b"GGUFf16".to_vec();
    expected.extend_from_slice(CONFIG);
    expected.extend_from_slice(&setup.weights);
    assert_eq!(std::fs::read(dir.join(FILE)).unwrap(), expected);
    assert_eq!(
        setup.sandbox.files(),
        vec![
            "tiny-convert/config.json".to_owned(),
            "tiny-convert/manifest.json".to_owned(),
            format!("tiny-convert/{FILE}")
        ]
    );

    let info = setup
        .sandbox
        .xtask(&["--json", "models", "info", "tiny-convert"])
        .json();
    assert_eq!(info["config"]["n_layer"], 2);
    assert!(info["manifest"]["converted_with"]
        .as_str()
        .unwrap()
        .ends_with("convert_hf_to_gguf.py --outtype f16"));
    assert_eq!(info["manifest"]["files"].as_array().unwrap().len(), 2);
    setup
        .sandbox
        .xtask(&["models", "verify", "tiny-convert"])
        .assert_success();
    let again = setup
        .sandbox
        .xtask(&["--json", "models", "download", "tiny-convert"]);
    assert_eq!(again.json()["status"], "already-present");
}

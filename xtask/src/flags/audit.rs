//! Flags of `cargo xtask audit`: checks of orcd's hash-chained audit log.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  cargo xtask audit verify /var/log/llorch/audit.jsonl*
  cargo xtask --json audit verify audit.jsonl")]
pub enum AuditCmd {
    /// Check the hash chain of audit log files and name the first line that breaks it
    #[command(after_help = "\
Examples:
  cargo xtask audit verify /var/log/llorch/audit.jsonl
  cargo xtask audit verify /var/log/llorch/audit.jsonl*     # with the rotated files, any order
  cargo xtask audit verify --partial audit.jsonl.2025-05-01  # older files deleted
  cargo xtask --json audit verify audit.jsonl

Exits with status 1 at the first line that was changed, removed, inserted or reordered.")]
    Verify {
        /// Audit log files (orcd's `--audit-log` and its rotated `PATH.YYYY-MM-DD` files);
        /// they are put in chain order by their first sequence number
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Accept a chain that does not start at the genesis line (its older files are gone)
        #[arg(long)]
        partial: bool,
    },
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::AuditCmd;
    use crate::flags::{Cli, Command};

    #[test]
    fn verify_takes_files_and_partial() {
        let cli = Cli::try_parse_from([
            "cargo xtask",
            "audit",
            "verify",
            "--partial",
            "a.jsonl",
            "b.jsonl",
        ])
        .unwrap();
        let Command::Audit(AuditCmd::Verify { files, partial }) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!(files, ["a.jsonl", "b.jsonl"].map(std::path::PathBuf::from));
        assert!(partial);
        assert!(Cli::try_parse_from(["cargo xtask", "audit", "verify"]).is_err());
    }
}

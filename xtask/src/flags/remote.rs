//! Flags of `cargo xtask remote`.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  cargo xtask remote hosts add gpu-box me@gpu-box.lan:22 --repo-path ~/llama-orch
  cargo xtask remote exec gpu-box -- nvidia-smi
  cargo xtask remote check
  cargo xtask --remote gpu-box models list

SSH runs with BatchMode=yes, ConnectTimeout from [remote] ssh_timeout (default 10 s),
StrictHostKeyChecking=accept-new and your keys or ssh-agent; ~/.ssh/config is honoured, so its
aliases work as hosts without a profile. LLORCH_SSH_CONFIG names another ssh config file (ssh -F).")]
pub enum RemoteCmd {
    /// List, add or remove host profiles ([remote.hosts.NAME] in the config file)
    #[command(subcommand)]
    Hosts(HostsCmd),
    /// Run a command on a host, streaming stdin, stdout and stderr, and exit with its exit code
    #[command(after_help = "\
Examples:
  cargo xtask remote exec gpu-box -- uname -a
  echo hello | cargo xtask remote exec gpu-box -- cat
  cargo xtask remote exec gpu-box -- sh -c 'ls | wc -l'

Each argument reaches the remote command as one argument, quoted for the remote shell: none can
start a second command. Use `sh -c '...'` when you want a pipeline or redirection there.")]
    Exec {
        /// Profile name, ~/.ssh/config alias or [user@]host
        host: String,
        /// The command and its arguments (after `--`)
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "COMMAND"
        )]
        command: Vec<String>,
    },
    /// Test SSH connectivity to hosts (every profile when none is named), and whether each has
    /// the checkout, a built worker and a route to the configured orchestrator
    #[command(after_help = "\
Examples:
  cargo xtask remote check
  cargo xtask --json remote check gpu-box

Exits non-zero when a host cannot be reached over SSH; what a reachable host lacks is
reported below its line (`readiness` in --json).")]
    Check {
        /// Profile names or ssh hosts to check
        hosts: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  cargo xtask remote hosts list
  cargo xtask remote hosts add gpu-box me@gpu-box.lan --repo-path ~/llama-orch
  cargo xtask remote hosts remove gpu-box")]
pub enum HostsCmd {
    /// List the host profiles of the config file
    #[command(
        after_help = "Examples:\n  cargo xtask remote hosts list\n  cargo xtask --json remote hosts list"
    )]
    List,
    /// Add a host profile and check that it is reachable (warns, but keeps it, when not)
    #[command(after_help = "\
Examples:
  cargo xtask remote hosts add gpu-box me@gpu-box.lan --repo-path ~/llama-orch
  cargo xtask remote hosts add mac me@192.168.1.20:2222 --identity ~/.ssh/id_mac --repo-path ~/src/llama-orch
  cargo xtask remote hosts add lab root@[fd00::7] --no-check")]
    Add {
        /// Profile name: letters, digits, `_`, `.` and `-`
        name: String,
        /// Where to connect: [USER@]HOST[:PORT], IPv6 as [ADDR]:PORT
        #[arg(value_name = "USER@HOST[:PORT]")]
        target: String,
        /// Private key to log in with (ssh -i); default: your ssh keys or agent
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// Path of the llama-orch checkout on the host, for `--remote` and `pool --host`
        #[arg(long, value_name = "PATH")]
        repo_path: Option<PathBuf>,
        /// Replace an existing profile of the same name
        #[arg(long)]
        force: bool,
        /// Save without trying to connect
        #[arg(long)]
        no_check: bool,
    },
    /// Remove a host profile, leaving the rest of the config file as it was
    #[command(after_help = "Example:\n  cargo xtask remote hosts remove gpu-box")]
    Remove {
        /// Profile name
        name: String,
    },
}

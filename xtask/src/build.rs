//! `cargo xtask build`: orcd and the worker for one backend, through `cargo build
//! --message-format=json-render-diagnostics` so that progress (compiled crates) and the built
//! executables come from cargo's JSON messages, not from its human output.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    sync::{mpsc, Mutex},
    time::{Duration, Instant},
};

mod progress;

use anyhow::{bail, Context as _};
use llorch_api::Backend;
use serde::{Deserialize, Serialize};

use crate::{
    flags::BuildCmd,
    process::{self, stream_lines},
    Context,
};

pub const ORCD_PACKAGE: &str = "orcd";
pub const ORCD_BINARY: &str = "orcd";
pub const WORKER_PACKAGE: &str = "llorch-worker";
pub const WORKER_BINARY: &str = "llorch-worker";

/// The executables one `build_binaries` call produced; both live in the same directory.
#[derive(Debug, Clone, Serialize)]
pub struct BuiltBinaries {
    pub orcd: PathBuf,
    pub worker: PathBuf,
}

impl BuiltBinaries {
    /// The directory holding both binaries (what `LLORCH_BIN_DIR` points at).
    pub fn dir(&self) -> &Path {
        self.worker
            .parent()
            .expect("an executable path has a parent directory")
    }
}

pub fn run(cmd: BuildCmd, cx: &Context) -> anyhow::Result<()> {
    match cmd {
        BuildCmd::Worker { backend, profile } => {
            let backend = backend.unwrap_or(cx.settings.default_backend);
            let build = CargoBuild::new(backend, profile.release(cx.settings.release))
                .package(WORKER_PACKAGE);
            let outcome = build.run(cx)?;
            let worker = outcome.executable(WORKER_BINARY)?;
            print_built(cx, &build, &outcome, &[("llorch-worker", &worker)])
        }
        BuildCmd::Orcd { profile } => {
            // orcd does not link llama.cpp: it always builds as the cpu (default) target dir.
            let build = CargoBuild::new(Backend::Cpu, profile.release(cx.settings.release))
                .package(ORCD_PACKAGE);
            let outcome = build.run(cx)?;
            let orcd = outcome.executable(ORCD_BINARY)?;
            print_built(cx, &build, &outcome, &[("orcd", &orcd)])
        }
        BuildCmd::All { backend, profile } => {
            let backend = backend.unwrap_or(cx.settings.default_backend);
            let build = CargoBuild::new(backend, profile.release(cx.settings.release))
                .package(ORCD_PACKAGE)
                .package(WORKER_PACKAGE);
            let outcome = build.run(cx)?;
            let built = BuiltBinaries {
                orcd: outcome.executable(ORCD_BINARY)?,
                worker: outcome.executable(WORKER_BINARY)?,
            };
            print_built(
                cx,
                &build,
                &outcome,
                &[("orcd", &built.orcd), ("llorch-worker", &built.worker)],
            )
        }
    }
}

/// Builds orcd and the worker for `backend` in one cargo run; used by `up`, `bench` and `test`.
pub fn build_binaries(
    cx: &Context,
    backend: Backend,
    release: bool,
) -> anyhow::Result<BuiltBinaries> {
    let outcome = CargoBuild::new(backend, release)
        .package(ORCD_PACKAGE)
        .package(WORKER_PACKAGE)
        .run(cx)?;
    Ok(BuiltBinaries {
        orcd: outcome.executable(ORCD_BINARY)?,
        worker: outcome.executable(WORKER_BINARY)?,
    })
}

/// `cargo ARGS` in the repository root with stdin closed, echoed with `--verbose`; the build and
/// test runners add their own output handling.
pub fn cargo(cx: &Context, args: &[OsString]) -> process::Expression {
    let mut command = cx.cmd("cargo").args(args);
    cx.out.debug(format!("$ {command}"));
    for name in inherited_package_env() {
        command = command.env_remove(name);
    }
    command.expression().stdin_null()
}

/// The variables cargo sets for the program it runs (`cargo xtask` is `cargo run`): build
/// scripts such as ring's rerun when they change, so a nested cargo that inherited them would
/// rebuild what a plain `cargo build` had built, and the other way round. Removed, a build is
/// fresh however xtask was started.
fn inherited_package_env() -> Vec<OsString> {
    std::env::vars_os()
        .map(|(name, _)| name)
        .filter(|name| {
            let name = name.to_string_lossy();
            name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_MANIFEST_")
                || name.starts_with("CARGO_BIN_EXE_")
                || matches!(
                    name.as_ref(),
                    "CARGO_CRATE_NAME"
                        | "CARGO_BIN_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_TARGET_TMPDIR"
                        | "OUT_DIR"
                )
        })
        .collect()
}

fn print_built(
    cx: &Context,
    build: &CargoBuild,
    outcome: &BuildOutcome,
    binaries: &[(&str, &Path)],
) -> anyhow::Result<()> {
    if cx.out.json() {
        let binaries: serde_json::Map<String, serde_json::Value> = binaries
            .iter()
            .map(|(name, path)| ((*name).to_owned(), serde_json::json!(path)))
            .collect();
        return cx.out.print_json(&serde_json::json!({
            "backend": build.builds_worker().then_some(build.backend),
            "profile": build.profile_name(),
            "binaries": binaries,
            "compiled": outcome.compiled,
            "fresh": outcome.fresh,
        }));
    }
    for (_, path) in binaries {
        cx.out.println(path.display());
    }
    Ok(())
}

/// One `cargo build` of some of the workspace's packages for a backend and profile.
pub struct CargoBuild {
    backend: Backend,
    release: bool,
    packages: Vec<&'static str>,
}

/// What cargo reported: the executables it produced and how many crates it compiled.
#[derive(Debug, Default)]
pub struct BuildOutcome {
    /// Binary target name → path of the executable.
    pub executables: Vec<(String, PathBuf)>,
    /// Crates compiled in this run.
    pub compiled: usize,
    /// Crates that were already up to date.
    pub fresh: usize,
}

impl BuildOutcome {
    pub fn executable(&self, binary: &str) -> anyhow::Result<PathBuf> {
        self.executables
            .iter()
            .find(|(name, _)| name == binary)
            .map(|(_, path)| path.clone())
            .with_context(|| format!("cargo finished without reporting the `{binary}` executable\nhint: check that the package still has a `[[bin]]` named `{binary}`"))
    }
}

impl CargoBuild {
    pub fn new(backend: Backend, release: bool) -> CargoBuild {
        CargoBuild {
            backend,
            release,
            packages: Vec::new(),
        }
    }

    pub fn package(mut self, package: &'static str) -> CargoBuild {
        self.packages.push(package);
        self
    }

    fn profile_name(&self) -> &'static str {
        if self.release {
            "release"
        } else {
            "debug"
        }
    }

    fn builds_worker(&self) -> bool {
        self.packages.contains(&WORKER_PACKAGE)
    }

    pub fn run(&self, cx: &Context) -> anyhow::Result<BuildOutcome> {
        let label = if self.builds_worker() {
            format!(
                "building {} ({}, {})",
                self.packages.join(" + "),
                self.backend,
                self.profile_name()
            )
        } else {
            format!(
                "building {} ({})",
                self.packages.join(" + "),
                self.profile_name()
            )
        };
        // Checked before anything compiles: a missing toolkit otherwise surfaces as a CMake
        // error minutes into llama.cpp's build.
        let extra_env = if self.builds_worker() {
            check_buildable(self.backend).with_context(|| label.clone())?
        } else {
            Vec::new()
        };
        let mut args: Vec<OsString> = vec![
            "build".into(),
            "--message-format=json-render-diagnostics".into(),
        ];
        if self.release {
            args.push("--release".into());
        }
        // Any build with the worker builds every binary of the workspace. Cargo unifies the
        // dependencies' features over the packages it builds, so `-p llorch-worker`, `-p orcd -p
        // llorch-worker` and the test run's `--workspace` would each compile their own variant
        // of reqwest, tokio and even llama.cpp's build dependencies, and relink the daemons at
        // every switch: `fleet up` on a host after `test all` then spent minutes compiling what
        // was built. One invocation for all of them (`up`, `test`, `bench`, `fleet`, `build
        // worker|all`) shares one set of artifacts. The worker needs llama.cpp's tools anyway, so
        // the other binaries add little; orcd alone (`build orcd`) still builds without them.
        if self.builds_worker() {
            args.extend(["--workspace".into(), "--bins".into()]);
        } else {
            for package in &self.packages {
                args.extend(["-p".into(), OsString::from(package)]);
            }
        }
        let target_dir = match self.backend {
            Backend::Cpu => default_target_dir(&cx.settings.repo_root),
            backend => backend_target_dir(cx, backend)?,
        };
        if self.backend != Backend::Cpu {
            if self.builds_worker() {
                args.extend([
                    "--features".into(),
                    format!("{WORKER_PACKAGE}/{}", self.backend).into(),
                ]);
            }
            args.extend(["--target-dir".into(), target_dir.clone().into_os_string()]);
        }
        // What decides which variant of the shared crates cargo builds (not the output
        // format or --quiet): a different one from the last build is why crates recompile.
        let selection = args[2..]
            .iter()
            .map(|arg| arg.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let stamp = progress::stamp_path(&target_dir, self.profile_name());
        let last = std::fs::read_to_string(&stamp).ok();
        if let Some(reason) = progress::rebuild_reason(last.as_deref(), &selection) {
            cx.out.status(format!("{label}: {reason}"));
        }
        if cx.out.quiet() {
            args.push("--quiet".into());
        }
        let mut expression = cargo(cx, &args).stderr_to_stdout().unchecked();
        for (name, value) in &extra_env {
            expression = expression.env(name, value);
        }

        let started = Instant::now();
        let spinner = cx.out.spinner(label.clone());
        let plain = spinner.is_hidden();
        let progress = Mutex::new(progress::BuildProgress::new(label.clone(), started));
        let out = &cx.out;
        let report = |progress: &mut progress::BuildProgress| {
            let now = Instant::now();
            match plain {
                true => {
                    if let Some(line) = progress.due(now, progress::PLAIN_REPORT_INTERVAL) {
                        out.status(line);
                    }
                }
                false => spinner.set_message(progress.describe(now)),
            }
        };
        let mut outcome = BuildOutcome::default();
        let (stop_reporting, stopped) = mpsc::channel::<()>();
        let status = std::thread::scope(|scope| {
            // Cargo can be silent for minutes (llama.cpp's CMake build): the report still
            // comes on time.
            let (progress, report) = (&progress, &report);
            scope.spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(Duration::from_secs(1))
                {
                    report(&mut progress.lock().expect("progress lock"));
                }
            });
            // Cargo's stderr (status lines, rendered diagnostics) is merged into the same
            // pipe; the JSON messages are recognised by their `reason` field, `Compiling`
            // lines are counted, everything else is shown as is.
            let status = stream_lines(expression, |line| {
                let mut progress = progress.lock().expect("progress lock");
                match line
                    .starts_with("{\"reason\":")
                    .then(|| serde_json::from_str::<CargoMessage>(line).ok())
                    .flatten()
                {
                    Some(CargoMessage::CompilerArtifact {
                        target,
                        executable,
                        fresh,
                    }) => {
                        progress.artifact(&target.name, fresh);
                        if let Some(executable) = executable {
                            outcome.executables.push((target.name, executable));
                        }
                    }
                    Some(CargoMessage::Other) => {}
                    None if progress.status_line(line, Instant::now()) => {}
                    None => spinner.suspend(|| eprintln!("{line}")),
                }
                report(&mut progress);
            });
            drop(stop_reporting);
            status
        })
        .with_context(|| format!("{label}: running cargo"))?;
        spinner.finish_and_clear();
        {
            let progress = progress.lock().expect("progress lock");
            outcome.compiled = progress.compiled();
            outcome.fresh = progress.fresh();
        }
        if !status.success() {
            bail!("{label}: cargo failed ({status}); its errors are printed above\nhint: `cargo xtask dev doctor` checks the tools llama.cpp's build needs");
        }
        cx.out.status(format!(
            "{label}: crates: {} compiled, {} up to date; {:.1}s",
            outcome.compiled,
            outcome.fresh,
            started.elapsed().as_secs_f64()
        ));
        // Best effort: without it the next build only cannot say why it recompiles.
        let _ = crate::files::write_atomically(&stamp, &format!("{selection}\n"));
        Ok(outcome)
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
enum CargoMessage {
    CompilerArtifact {
        target: ArtifactTarget,
        executable: Option<PathBuf>,
        fresh: bool,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct ArtifactTarget {
    name: String,
}

/// Environment a backend's build needs, or an error naming what to install.
pub fn check_buildable(backend: Backend) -> anyhow::Result<Vec<(String, OsString)>> {
    match backend {
        Backend::Cpu => Ok(Vec::new()),
        Backend::Cuda => {
            let Some(nvcc) = find_nvcc() else {
                bail!("the cuda backend needs the CUDA toolkit, but `nvcc` is neither on PATH nor in $CUDA_PATH/bin or /usr/local/cuda/bin\nhint: install the CUDA toolkit (`sudo apt-get install nvidia-cuda-toolkit`, or NVIDIA's installer) or set CUDA_PATH to its directory; `cargo xtask build worker cpu` needs no GPU");
            };
            // CMake finds nvcc through CUDACXX even when its directory is not on PATH.
            Ok(vec![("CUDACXX".to_owned(), nvcc.into_os_string())])
        }
        Backend::Metal => {
            if !cfg!(target_os = "macos") {
                bail!(
                    "the metal backend needs macOS, and this machine runs {}\nhint: build `cargo xtask build worker cpu`, or `cuda` on a machine with an NVIDIA GPU",
                    std::env::consts::OS
                );
            }
            Ok(Vec::new())
        }
    }
}

/// `nvcc` from PATH, then `$CUDA_PATH/bin`, then `/usr/local/cuda/bin`.
pub fn find_nvcc() -> Option<PathBuf> {
    nvcc_candidates(std::env::var_os("PATH"), std::env::var_os("CUDA_PATH"))
        .into_iter()
        .find(|candidate| candidate.is_file())
}

fn nvcc_candidates(path: Option<OsString>, cuda_path: Option<OsString>) -> Vec<PathBuf> {
    let mut candidates: Vec<PathBuf> = path
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nvcc"))
        .collect();
    if let Some(root) = cuda_path.filter(|root| !root.is_empty()) {
        candidates.push(PathBuf::from(root).join("bin").join("nvcc"));
    }
    candidates.push(PathBuf::from("/usr/local/cuda/bin/nvcc"));
    candidates
}

/// Cargo's target directory for a cpu build: CARGO_TARGET_DIR (relative to the checkout), else
/// `<checkout>/target`. Read without `cargo metadata`, which would cost a cargo run.
pub fn default_target_dir(repo_root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| repo_root.join(dir))
        .unwrap_or_else(|| repo_root.join("target"))
}

/// `target/<backend>` (under cargo's target directory), so that an accelerated build never
/// replaces the cpu build's llama.cpp objects.
pub fn backend_target_dir(cx: &Context, backend: Backend) -> anyhow::Result<PathBuf> {
    Ok(workspace_metadata(cx)?
        .target_directory
        .join(backend.as_str()))
}

/// The parts of `cargo metadata --no-deps` the build and test domains use.
#[derive(Debug, Deserialize)]
pub struct WorkspaceMetadata {
    pub target_directory: PathBuf,
    pub packages: Vec<MetadataPackage>,
}

#[derive(Debug, Deserialize)]
pub struct MetadataPackage {
    pub name: String,
    /// The package's `Cargo.toml`.
    pub manifest_path: PathBuf,
    pub targets: Vec<MetadataTarget>,
}

#[derive(Debug, Deserialize)]
pub struct MetadataTarget {
    pub name: String,
    pub kind: Vec<String>,
    /// The target's root file (`src/main.rs`, `tests/spine.rs`).
    pub src_path: PathBuf,
}

pub fn workspace_metadata(cx: &Context) -> anyhow::Result<WorkspaceMetadata> {
    let output = cx
        .cmd("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .read()
        .with_context(|| {
            format!(
                "reading the cargo workspace at {}\nhint: check --repo-root and that its Cargo.toml parses (`cargo metadata --no-deps`)",
                cx.settings.repo_root.display()
            )
        })?;
    serde_json::from_str(&output).context("parsing `cargo metadata` output")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvcc_is_searched_on_path_then_cuda_path_then_usr_local() {
        let path = std::env::join_paths(["/opt/a", "/opt/b"]).unwrap();
        let candidates = nvcc_candidates(Some(path), Some("/opt/cuda".into()));
        assert_eq!(
            candidates,
            [
                PathBuf::from("/opt/a/nvcc"),
                PathBuf::from("/opt/b/nvcc"),
                PathBuf::from("/opt/cuda/bin/nvcc"),
                PathBuf::from("/usr/local/cuda/bin/nvcc"),
            ]
        );
        assert_eq!(
            nvcc_candidates(None, Some("".into())),
            [PathBuf::from("/usr/local/cuda/bin/nvcc")]
        );
    }

    #[test]
    fn cargo_messages_keep_artifacts_and_ignore_the_rest() {
        let artifact = r#"{"reason":"compiler-artifact","package_id":"x","target":{"kind":["bin"],"name":"orcd"},"profile":{},"features":[],"filenames":[],"executable":"/t/release/orcd","fresh":false}"#;
        match serde_json::from_str::<CargoMessage>(artifact).unwrap() {
            CargoMessage::CompilerArtifact {
                target,
                executable,
                fresh,
            } => {
                assert_eq!(target.name, "orcd");
                assert_eq!(executable, Some(PathBuf::from("/t/release/orcd")));
                assert!(!fresh);
            }
            CargoMessage::Other => panic!("an artifact was not recognised"),
        }
        let finished = r#"{"reason":"build-finished","success":true}"#;
        assert!(matches!(
            serde_json::from_str::<CargoMessage>(finished).unwrap(),
            CargoMessage::Other
        ));
    }

    #[test]
    fn metal_is_refused_off_macos_and_cpu_needs_nothing() {
        assert!(check_buildable(Backend::Cpu).unwrap().is_empty());
        if !cfg!(target_os = "macos") {
            let error = check_buildable(Backend::Metal).unwrap_err().to_string();
            assert!(error.contains("needs macOS"), "{error}");
            assert!(error.contains("hint:"), "{error}");
        }
    }
}

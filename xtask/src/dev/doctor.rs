//! `dev doctor`: finds the tools this project needs and says, for each one missing, the exact
//! command that installs it. `dev setup` acts on the same findings.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::process;

/// How much a missing tool matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Need {
    /// Building or running the project fails without it; doctor exits non-zero.
    Required,
    /// The test suite needs it; `dev setup` installs it, doctor only warns.
    Tests,
    /// Nice to have or hardware-specific; reported, never installed.
    Optional,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Missing,
}

/// One line of the doctor's report.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub name: &'static str,
    pub need: Need,
    pub status: Status,
    /// Version, path or what was looked for.
    pub detail: String,
    /// The command that fixes a missing tool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// System packages that provide it on this platform (what `dev setup` installs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<&'static str>,
}

impl Finding {
    pub fn is_problem(&self) -> bool {
        self.status == Status::Missing && self.need != Need::Optional
    }
}

/// The system package manager `dev setup` drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PackageManager {
    Apt,
    Brew,
    Unknown,
}

impl PackageManager {
    pub fn detect() -> PackageManager {
        if cfg!(target_os = "macos") {
            PackageManager::Brew
        } else if which::which("apt-get").is_ok() {
            PackageManager::Apt
        } else {
            PackageManager::Unknown
        }
    }

    /// The command line a person would type to install `packages`.
    pub fn install_command(self, packages: &[&str]) -> String {
        let list = packages.join(" ");
        match self {
            PackageManager::Apt if is_root() => format!("apt-get install -y {list}"),
            PackageManager::Apt => format!("sudo apt-get install -y {list}"),
            PackageManager::Brew => format!("brew install {list}"),
            PackageManager::Unknown => format!("install {list} with your system's package manager"),
        }
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Debian and Homebrew package names for one tool.
struct Packages {
    apt: &'static [&'static str],
    brew: &'static [&'static str],
}

impl Packages {
    fn for_manager(&self, manager: PackageManager) -> Vec<&'static str> {
        match manager {
            PackageManager::Apt | PackageManager::Unknown => self.apt.to_vec(),
            PackageManager::Brew => self.brew.to_vec(),
        }
    }
}

/// Runs every check. `repo_root` is where submodules are looked for.
pub fn diagnose(repo_root: &Path) -> Vec<Finding> {
    let manager = PackageManager::detect();
    let mut findings = vec![
        program("rustc", Need::Required, &["--version"], None, manager),
        program("cargo", Need::Required, &["--version"], None, manager),
        program(
            "git",
            Need::Required,
            &["--version"],
            Some(Packages {
                apt: &["git"],
                brew: &["git"],
            }),
            manager,
        ),
        c_compiler(manager),
        program(
            "cmake",
            Need::Required,
            &["--version"],
            Some(Packages {
                apt: &["cmake"],
                brew: &["cmake"],
            }),
            manager,
        ),
        libclang(manager),
        program(
            "ssh",
            Need::Required,
            &["-V"],
            Some(Packages {
                apt: &["openssh-client"],
                brew: &[],
            }),
            manager,
        ),
        sshd(manager),
        // The web console's browser test drives headless Chromium through chromedriver.
        program(
            "chromium",
            Need::Tests,
            &["--version"],
            Some(Packages {
                apt: &["chromium"],
                brew: &[],
            }),
            manager,
        ),
        program(
            "chromedriver",
            Need::Tests,
            &["--version"],
            Some(Packages {
                apt: &["chromium-driver"],
                brew: &[],
            }),
            manager,
        ),
        // `top`'s end-to-end test runs it in a real terminal: tmux, driven by send-keys.
        program(
            "tmux",
            Need::Tests,
            &["-V"],
            Some(Packages {
                apt: &["tmux"],
                brew: &["tmux"],
            }),
            manager,
        ),
        program(
            "python3",
            Need::Required,
            &["--version"],
            Some(Packages {
                apt: &["python3"],
                brew: &["python"],
            }),
            manager,
        ),
        pip(manager),
        hf_cli(),
    ];
    findings.extend(gpu_findings());
    findings.extend(submodules(repo_root));
    findings
}

fn finding(name: &'static str, need: Need, found: Result<String, String>) -> Finding {
    match found {
        Ok(detail) => Finding {
            name,
            need,
            status: Status::Ok,
            detail,
            fix: None,
            packages: vec![],
        },
        Err(detail) => Finding {
            name,
            need,
            status: Status::Missing,
            detail,
            fix: None,
            packages: vec![],
        },
    }
}

fn with_fix(mut finding: Finding, packages: Option<Packages>, manager: PackageManager) -> Finding {
    if finding.status == Status::Missing {
        if let Some(packages) = packages {
            finding.packages = packages.for_manager(manager);
        }
        finding.fix = Some(if finding.packages.is_empty() {
            "see the README's requirements".to_owned()
        } else {
            format!(
                "{} (or run `cargo xtask dev setup`)",
                manager.install_command(&finding.packages)
            )
        });
    }
    finding
}

/// The first line a program prints for its version flag, or why it could not be run.
fn version_of(program: &Path, args: &[&str]) -> Option<String> {
    let output = process::cmd(program).args(args).output().ok()?;
    let text = if output.stdout.is_empty() {
        output.stderr
    } else {
        output.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .map(|line| line.trim().to_owned())
}

fn program(
    name: &'static str,
    need: Need,
    version_args: &[&str],
    packages: Option<Packages>,
    manager: PackageManager,
) -> Finding {
    let found = match which::which(name) {
        Ok(path) => {
            Ok(version_of(&path, version_args).unwrap_or_else(|| path.display().to_string()))
        }
        Err(_) => Err(format!("`{name}` not found on PATH")),
    };
    with_fix(finding(name, need, found), packages, manager)
}

fn c_compiler(manager: PackageManager) -> Finding {
    let cc = ["cc", "gcc", "clang"]
        .into_iter()
        .find_map(|name| which::which(name).ok());
    let cxx = ["c++", "g++", "clang++"]
        .into_iter()
        .find_map(|name| which::which(name).ok());
    let found = match (cc, cxx) {
        (Some(cc), Some(cxx)) => Ok(format!(
            "{} / {}",
            version_of(&cc, &["--version"]).unwrap_or_else(|| cc.display().to_string()),
            cxx.display()
        )),
        (None, _) => Err("no C compiler (cc, gcc or clang) on PATH".to_owned()),
        (_, None) => Err("no C++ compiler (c++, g++ or clang++) on PATH".to_owned()),
    };
    let packages = Packages {
        apt: &["build-essential"],
        brew: &[],
    };
    let mut finding = with_fix(
        finding("c/c++ compiler", Need::Required, found),
        Some(packages),
        manager,
    );
    if manager == PackageManager::Brew && finding.status == Status::Missing {
        finding.fix = Some("xcode-select --install".to_owned());
    }
    finding
}

/// Directories below `dir` whose names start with `prefix`, sorted so the newest version wins
/// when the caller takes the last.
fn subdirs_with_prefix(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(prefix))
        })
        .collect();
    found.sort();
    found
}

/// bindgen needs the libclang shared library *and* clang's own headers (`stdbool.h`); the
/// library alone fails late, after a long build, so both are checked.
fn libclang(manager: PackageManager) -> Finding {
    let mut library_dirs: Vec<PathBuf> = Vec::new();
    if let Ok(path) = std::env::var("LIBCLANG_PATH") {
        library_dirs.push(PathBuf::from(path));
    }
    for llvm in subdirs_with_prefix(Path::new("/usr/lib"), "llvm-")
        .into_iter()
        .rev()
    {
        library_dirs.push(llvm.join("lib"));
    }
    library_dirs.extend(
        [
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib/aarch64-linux-gnu",
            "/usr/lib64",
            "/usr/lib",
            "/usr/local/lib",
        ]
        .map(PathBuf::from),
    );
    library_dirs.extend(
        [
            "/opt/homebrew/opt/llvm/lib",
            "/usr/local/opt/llvm/lib",
            "/Library/Developer/CommandLineTools/usr/lib",
        ]
        .map(PathBuf::from),
    );
    let library = library_dirs.iter().find_map(|dir| {
        std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .map(|entry| entry.path())
            .find(|path| {
                path.file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| {
                        name.starts_with("libclang")
                            && (name.contains(".so") || name.ends_with(".dylib"))
                            && !name.starts_with("libclang-cpp")
                            && !name.starts_with("libclang_rt")
                    })
            })
    });
    let headers_present = cfg!(target_os = "macos")
        || subdirs_with_prefix(Path::new("/usr/lib"), "llvm-")
            .iter()
            .any(|llvm| {
                subdirs_with_prefix(&llvm.join("lib/clang"), "")
                    .iter()
                    .any(|version| version.join("include/stdbool.h").is_file())
            })
        || Path::new("/usr/lib/clang").is_dir()
            && subdirs_with_prefix(Path::new("/usr/lib/clang"), "")
                .iter()
                .any(|version| version.join("include/stdbool.h").is_file());
    let found = match (library, headers_present) {
        (Some(library), true) => Ok(library.display().to_string()),
        (Some(library), false) => Err(format!(
            "{} found, but clang's headers (stdbool.h) are missing; bindgen would fail",
            library.display()
        )),
        (None, _) => {
            Err("libclang (needed by bindgen to build llama.cpp's bindings) not found".to_owned())
        }
    };
    with_fix(
        finding("libclang", Need::Required, found),
        Some(Packages {
            apt: &["libclang-dev"],
            brew: &["llvm"],
        }),
        manager,
    )
}

fn sshd(manager: PackageManager) -> Finding {
    let path = ["/usr/sbin/sshd", "/usr/local/sbin/sshd"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .or_else(|| which::which("sshd").ok());
    let found = match path {
        Some(path) => Ok(path.display().to_string()),
        None => Err("sshd not found (the remote test suite starts a private one)".to_owned()),
    };
    with_fix(
        finding("sshd", Need::Tests, found),
        Some(Packages {
            apt: &["openssh-server"],
            brew: &[],
        }),
        manager,
    )
}

fn pip(manager: PackageManager) -> Finding {
    let found = match which::which("python3") {
        Ok(python) => match process::cmd(python)
            .args(["-m", "pip", "--version"])
            .output()
        {
            Ok(output) if output.status.success() => Ok(String::from_utf8_lossy(&output.stdout)
                .split(" from ")
                .next()
                .unwrap_or("pip")
                .trim()
                .to_owned()),
            _ => Err(
                "`python3 -m pip` does not work (the default model is fetched with pip)".to_owned(),
            ),
        },
        Err(_) => Err("needs python3".to_owned()),
    };
    with_fix(
        finding("pip", Need::Required, found),
        Some(Packages {
            apt: &["python3-pip"],
            brew: &[],
        }),
        manager,
    )
}

fn hf_cli() -> Finding {
    let found = match which::which("hf").or_else(|_| which::which("huggingface-cli")) {
        Ok(path) => Ok(path.display().to_string()),
        Err(_) => Err("not installed (optional: downloads use the hf-hub crate)".to_owned()),
    };
    let mut finding = finding("hf cli", Need::Optional, found);
    if finding.status == Status::Missing {
        finding.fix = Some("python3 -m pip install -U huggingface_hub".to_owned());
    }
    finding
}

/// CUDA and Metal are reported where they are relevant; neither is ever required.
fn gpu_findings() -> Vec<Finding> {
    if cfg!(target_os = "macos") {
        let found = match which::which("xcrun") {
            Ok(_) => Ok("Metal available (macOS)".to_owned()),
            Err(_) => Err(
                "xcrun not found; the metal backend needs the Xcode command line tools".to_owned(),
            ),
        };
        let mut metal = finding("metal", Need::Optional, found);
        if metal.status == Status::Missing {
            metal.fix = Some("xcode-select --install".to_owned());
        }
        return vec![metal];
    }
    let nvidia_smi = which::which("nvidia-smi").ok();
    let nvcc = which::which("nvcc").ok().or_else(|| {
        [
            std::env::var("CUDA_PATH")
                .map(|dir| PathBuf::from(dir).join("bin/nvcc"))
                .ok(),
            Some(PathBuf::from("/usr/local/cuda/bin/nvcc")),
        ]
        .into_iter()
        .flatten()
        .find(|path| path.is_file())
    });
    let found = match (&nvidia_smi, &nvcc) {
        (_, Some(nvcc)) => Ok(version_of(nvcc, &["--version"])
            .map(|_| format!("CUDA toolkit at {}", nvcc.display()))
            .unwrap_or_else(|| nvcc.display().to_string())),
        (Some(_), None) => Err("an NVIDIA driver is present but the CUDA toolkit (nvcc) is not; the cuda backend cannot be built".to_owned()),
        (None, None) => Err("no NVIDIA GPU or CUDA toolkit (the cpu backend is used)".to_owned()),
    };
    let mut cuda = finding("cuda", Need::Optional, found);
    if cuda.status == Status::Missing && nvidia_smi.is_some() {
        cuda.fix = Some(
            "install the CUDA toolkit (Debian: apt-get install nvidia-cuda-toolkit)".to_owned(),
        );
    }
    vec![cuda]
}

/// Uninitialised submodules make builds fail in confusing ways; report them here.
fn submodules(repo_root: &Path) -> Option<Finding> {
    if !repo_root.join(".gitmodules").is_file() {
        return None;
    }
    let output = process::cmd("git")
        .args(["submodule", "status", "--recursive"])
        .dir(repo_root)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let uninitialised: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with('-'))
        .filter_map(|line| line.split_whitespace().nth(1))
        .collect();
    let found = if uninitialised.is_empty() {
        Ok(format!("{} initialised", text.lines().count()))
    } else {
        Err(format!("not initialised: {}", uninitialised.join(", ")))
    };
    let mut finding = finding("git submodules", Need::Required, found);
    if finding.status == Status::Missing {
        finding.fix = Some(
            "git submodule update --init --recursive (or run `cargo xtask dev setup`)".to_owned(),
        );
    }
    Some(finding)
}

pub fn run(cx: &crate::Context) -> anyhow::Result<()> {
    let findings = diagnose(&cx.settings.repo_root);
    let problems = findings
        .iter()
        .filter(|finding| finding.is_problem())
        .count();
    let required_missing = findings
        .iter()
        .filter(|f| f.status == Status::Missing && f.need == Need::Required)
        .count();
    if cx.out.json() {
        cx.out.print_json(&serde_json::json!({
            "ok": required_missing == 0,
            "package_manager": PackageManager::detect(),
            "checks": findings,
        }))?;
    } else {
        print_report(cx, &findings);
        if problems == 0 {
            cx.out
                .println(cx.out.paint().green("all required tools are present"));
        }
    }
    if required_missing > 0 {
        if !cx.out.json() {
            cx.out.status(format!(
                "{required_missing} required tool(s) missing; run `cargo xtask dev setup` to install them"
            ));
        }
        return Err(crate::output::ExitCode(1).into());
    }
    Ok(())
}

pub fn print_report(cx: &crate::Context, findings: &[Finding]) {
    let paint = cx.out.paint();
    for finding in findings {
        let mark = match (finding.status, finding.need) {
            (Status::Ok, _) => paint.green("ok  "),
            (Status::Missing, Need::Required) => paint.red("MISS"),
            (Status::Missing, Need::Tests) => paint.yellow("warn"),
            (Status::Missing, Need::Optional) => paint.dim("----"),
        };
        cx.out
            .println(format!("{mark} {:<15} {}", finding.name, finding.detail));
        if let Some(fix) = &finding.fix {
            if finding.status == Status::Missing {
                cx.out
                    .println(format!("     {:<15} fix: {}", "", paint.cyan(fix)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_commands_name_the_packages() {
        assert!(PackageManager::Apt
            .install_command(&["cmake"])
            .ends_with("apt-get install -y cmake"));
        assert_eq!(
            PackageManager::Brew.install_command(&["cmake", "llvm"]),
            "brew install cmake llvm"
        );
    }

    #[test]
    fn a_missing_required_tool_is_a_problem_with_a_fix() {
        let missing = with_fix(
            finding("cmake", Need::Required, Err("not found".into())),
            Some(Packages {
                apt: &["cmake"],
                brew: &["cmake"],
            }),
            PackageManager::Apt,
        );
        assert!(missing.is_problem());
        assert_eq!(missing.packages, vec!["cmake"]);
        assert!(missing.fix.unwrap().contains("apt-get install -y cmake"));
        let optional = finding("hf cli", Need::Optional, Err("absent".into()));
        assert!(!optional.is_problem());
    }

    #[test]
    fn this_machine_has_the_rust_toolchain() {
        let findings = diagnose(Path::new("."));
        let cargo = findings
            .iter()
            .find(|finding| finding.name == "cargo")
            .unwrap();
        assert_eq!(cargo.status, Status::Ok, "{cargo:?}");
        assert!(cargo.detail.starts_with("cargo "), "{cargo:?}");
    }
}

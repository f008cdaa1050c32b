//! `cargo xtask top` end to end: the built xtask binary in a real terminal (tmux) against the
//! real orcd (tokens on) and two real workers on loopback. The test types keys with `send-keys`
//! and reads the screen with `capture-pane`: the workers appear, a running job's tokens grow,
//! `c` then `y` cancels it and its slot frees, `q` and SIGTERM give the shell its terminal back.
//! `--once` is checked without a terminal: its text parses and repeats, a refused token names
//! the setting to fix, an unreachable orcd fails naming the URL.
//!
//! On a pool-managed fleet (orcd, `llorch-pool-managerd` and the worker it starts): the Hosts
//! pane shows the host, `u` then `y` with a client token says which token setting to fix, the
//! log pane follows the worker's log through orcd, and with the operator's token `u` then `y`
//! unloads the model and its worker leaves.
//!
//! The screen of the two-worker fleet with a job running, and `--once` at the same moment, are
//! written to `target/top-screens/two-workers.txt` and `two-workers-once.txt` (the docs show
//! them); the pool-managed fleet's screen with its log pane open to `pool-managed.txt`.
//!
//! A custom harness (libtest-mimic) so that the terminal tests report themselves *ignored* —
//! counted as skipped by `cargo xtask test` — when tmux is not installed; `cargo xtask dev
//! setup` installs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use futures::StreamExt;
use llorch_api::StreamEvent;
use llorch_tests::*;

const CLIENT_TOKEN: &str = "client-token-for-the-top-test";
const WORKER_TOKEN: &str = "worker-token-for-the-top-test";
const ADMIN_TOKEN: &str = "admin-token-for-the-top-test";
/// The pool manager's host; its workers' ids begin with it.
const HOST_ID: &str = "pool-a";
/// Generous: two workers and the test share a loaded machine.
const SCREEN_DEADLINE: Duration = Duration::from_secs(60);

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let tmux = find_tmux();
    if let Err(missing) = &tmux {
        eprintln!("skipped: {missing}");
    }
    let no_tmux = tmux.is_err();
    let tmux = tmux.ok();
    let in_tmux = |test: fn(&Path) -> anyhow::Result<()>| {
        let tmux = tmux.clone();
        move || match &tmux {
            Some(tmux) => test(tmux).map_err(|error| format!("{error:#}").into()),
            None => Err("tmux is not installed: run `cargo xtask dev setup`".into()),
        }
    };
    let plain = |test: fn() -> anyhow::Result<()>| {
        move || test().map_err(|error| format!("{error:#}").into())
    };
    let trials = vec![
        libtest_mimic::Trial::test(
            "top_shows_a_two_worker_fleet_cancels_a_job_and_restores_the_terminal_on_q",
            in_tmux(top_on_a_live_fleet),
        )
        .with_ignored_flag(no_tmux),
        libtest_mimic::Trial::test(
            "top_shows_hosts_follows_a_remote_log_and_unloads_with_the_operator_token",
            in_tmux(top_on_a_pool_managed_fleet),
        )
        .with_ignored_flag(no_tmux),
        libtest_mimic::Trial::test(
            "top_says_orcd_is_unreachable_and_restores_the_terminal_on_sigterm",
            in_tmux(top_without_orcd_then_sigterm),
        )
        .with_ignored_flag(no_tmux),
        libtest_mimic::Trial::test(
            "top_once_prints_a_stable_snapshot_that_parses",
            plain(once_snapshot_parses),
        ),
        libtest_mimic::Trial::test(
            "top_once_fails_naming_the_url_or_the_token_setting",
            plain(once_failures),
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}

fn find_tmux() -> anyhow::Result<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("tmux"))
        .find(|path| path.is_file())
        .context("the terminal tests of `top` need `tmux` on PATH: run `cargo xtask dev setup` (Debian package tmux)")
}

/// A private tmux server (its own socket, no config file), killed on drop.
struct Tmux {
    program: PathBuf,
    socket: String,
}

impl Tmux {
    fn new(program: &Path, name: &str) -> Tmux {
        Tmux {
            program: program.to_owned(),
            socket: format!("llorch-top-{name}-{}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        let output = Command::new(&self.program)
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .with_context(|| format!("running tmux {args:?}"))?;
        ensure!(
            output.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(output)
    }

    /// A shell in an 80×24 window: the smallest screen `top` promises to be usable on.
    fn start_shell(&self, session: &str) -> anyhow::Result<()> {
        self.run(&[
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "80",
            "-y",
            "24",
            "env",
            "PS1=$ ",
            "sh",
        ])?;
        Ok(())
    }

    /// Types `line` into the shell and presses Enter.
    fn type_line(&self, session: &str, line: &str) -> anyhow::Result<()> {
        self.run(&["send-keys", "-t", session, "-l", line])?;
        self.run(&["send-keys", "-t", session, "Enter"])?;
        Ok(())
    }

    fn keys(&self, session: &str, keys: &[&str]) -> anyhow::Result<()> {
        let mut args = vec!["send-keys", "-t", session];
        args.extend_from_slice(keys);
        self.run(&args)?;
        Ok(())
    }

    fn screen(&self, session: &str) -> anyhow::Result<String> {
        let output = self.run(&["capture-pane", "-p", "-t", session])?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn format(&self, session: &str, format: &str) -> anyhow::Result<String> {
        let output = self.run(&["display-message", "-p", "-t", session, format])?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// Polls the screen until `wanted` finds what it needs in it, and returns that.
    fn wait_for<T>(
        &self,
        session: &str,
        what: &str,
        mut wanted: impl FnMut(&str) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + SCREEN_DEADLINE;
        loop {
            let screen = self.screen(session)?;
            if let Some(found) = wanted(&screen) {
                return Ok(found);
            }
            if Instant::now() > deadline {
                bail!("waited {SCREEN_DEADLINE:?} for {what}; the screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `top` has exited with status 0, and the shell has the terminal as it was: the main
    /// screen, a visible cursor, canonical mode and echo (raw mode off).
    fn assert_restored(&self, session: &str) -> anyhow::Result<()> {
        self.wait_for(session, "`top exited 0`", |screen| {
            screen.contains("top exited 0").then_some(())
        })?;
        let (alternate, cursor) = (
            self.format(session, "#{alternate_on}")?,
            self.format(session, "#{cursor_flag}")?,
        );
        ensure!(
            (alternate.as_str(), cursor.as_str()) == ("0", "1"),
            "after top: alternate screen {alternate}, cursor shown {cursor}"
        );
        self.type_line(
            session,
            "stty -a | tr ' ;' '\\n\\n' | grep -xE -- '-?(icanon|echo)' | tr '\\n' ' '; echo modes-$((6*7))",
        )?;
        // The marker as typed (`$((6*7))`) differs from its output, so only the output matches.
        let modes = self.wait_for(session, "the terminal modes", |screen| {
            screen
                .lines()
                .find(|line| line.trim_end().ends_with("modes-42"))
                .map(str::to_owned)
        })?;
        ensure!(
            modes.split_whitespace().take(2).collect::<Vec<_>>() == ["icanon", "echo"],
            "the terminal was left in raw mode: {modes}"
        );
        Ok(())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The shell line that runs the built xtask's `top` with a private configuration.
fn top_command_line(dir: &Path, orcd_url: &str, token_file: Option<&str>) -> String {
    let quote = |text: &str| format!("'{}'", text.replace('\'', "'\\''"));
    let token = token_file.map_or(String::new(), |path| {
        format!("LLORCH_API_TOKEN_FILE={} ", quote(path))
    });
    format!(
        "env LLORCH_CONFIG_PATH={} LLORCH_RUN_DIR={} {token}{} top --orchestrator-url {}; echo \"top exited $?\"",
        quote(&dir.join("config.toml").display().to_string()),
        quote(&dir.join("run").display().to_string()),
        quote(&xtask_binary().display().to_string()),
        quote(orcd_url),
    )
}

/// The cells of the screen line that starts with `prefix` (after the border), split on
/// whitespace.
fn row_cells(screen: &str, prefix: &str) -> Option<Vec<String>> {
    screen.lines().find_map(|line| {
        let inner = line.trim_matches(|c: char| c == '│' || c.is_whitespace());
        let inner = inner.trim_start_matches("> ");
        inner.starts_with(prefix).then(|| {
            inner
                .split_whitespace()
                .filter(|cell| *cell != "│")
                .map(str::to_owned)
                .collect()
        })
    })
}

/// The token count of the job whose id starts with `id_prefix`, when its row shows `state`.
fn job_tokens(screen: &str, id_prefix: &str, state: &str) -> Option<u32> {
    let cells = row_cells(screen, id_prefix)?;
    // JOB MODEL WORKER STATE TTFT TOKENS TIME
    (cells.get(3)? == state).then(|| cells.get(5)?.parse().ok())?
}

fn write_screen(name: &str, screen: &str) -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("target/top-screens");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(format!("{name}.txt")), screen)?;
    Ok(())
}

/// orcd with client, worker and operator tokens; returns the operator's token file too.
fn orcd_with_operator(dir: &Path) -> anyhow::Result<(Daemon, TokenFiles, String)> {
    let admin = token_file(dir, "admin", ADMIN_TOKEN);
    let (orcd, tokens) = start_orcd_with_tokens(
        dir,
        CLIENT_TOKEN,
        WORKER_TOKEN,
        &["--admin-token-file", &admin],
    )?;
    Ok((orcd, tokens, admin))
}

fn top_on_a_live_fleet(tmux_program: &Path) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (orcd, tokens, admin) = orcd_with_operator(dir.path())?;
    let worker_token = tokens.worker.as_str();
    let _worker_a = start_worker(
        &orcd.url,
        1,
        &["--worker-token-file", worker_token, "--worker-id", "top-a"],
    )?;
    let _worker_b = start_worker(
        &orcd.url,
        1,
        &["--worker-token-file", worker_token, "--worker-id", "top-b"],
    )?;

    let tmux = Tmux::new(tmux_program, "live");
    tmux.start_shell("top")?;
    // The operator's token: it sees and cancels every client's jobs.
    tmux.type_line(
        "top",
        &top_command_line(dir.path(), &orcd.url, Some(&admin)),
    )?;
    tmux.wait_for("top", "both workers live on the screen", |screen| {
        let live = |id| {
            row_cells(screen, id)
                .is_some_and(|cells| cells.get(4).map(String::as_str) == Some("live"))
        };
        (live("top-a") && live("top-b")).then_some(())
    })?;

    let runtime = runtime();
    let job = runtime.block_on(start_long_job(&orcd.url))?;
    let id_prefix = &job.job_id[..8];
    let first = tmux.wait_for("top", "the job running with tokens", |screen| {
        job_tokens(screen, id_prefix, "running").filter(|tokens| *tokens > 0)
    })?;
    let later = tmux.wait_for("top", "the job's tokens to grow", |screen| {
        job_tokens(screen, id_prefix, "running").filter(|tokens| *tokens > first)
    })?;
    write_screen("two-workers", &tmux.screen("top")?)?;
    let once = xtask(
        dir.path(),
        &["top", "--once", "--orchestrator-url", &orcd.url],
        Some(&admin),
    );
    ensure!(
        once.status.success(),
        "top --once: {}",
        String::from_utf8_lossy(&once.stderr)
    );
    write_screen("two-workers-once", &String::from_utf8(once.stdout)?)?;
    let busy_worker = row_cells(&tmux.screen("top")?, id_prefix)
        .and_then(|cells| cells.get(2).cloned())
        .context("the job's worker")?;
    assert!(later > first);

    // To the Jobs pane (Workers → Queues → Jobs); the running job is the first row.
    tmux.keys("top", &["Tab", "Tab", "c"])?;
    tmux.wait_for("top", "the cancel question", |screen| {
        screen
            .contains(&format!("Cancel job {}?", job.job_id))
            .then_some(())
    })?;
    tmux.keys("top", &["y"])?;
    tmux.wait_for("top", "the job cancelled and its slot free", |screen| {
        let cancelled = job_tokens(screen, id_prefix, "cancelled").is_some();
        let slot_free = row_cells(screen, &busy_worker)
            .is_some_and(|cells| cells.get(5).map(String::as_str) == Some("0/1"));
        let said = screen.contains(&format!("cancelled job {}", job.job_id));
        (cancelled && slot_free && said).then_some(())
    })?;
    let finish = runtime.block_on(job.finish())?;
    ensure!(
        finish.contains("Cancelled"),
        "the job's own stream did not end cancelled: {finish}"
    );

    tmux.keys("top", &["q"])?;
    tmux.assert_restored("top")
}

fn top_on_a_pool_managed_fleet(tmux_program: &Path) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (orcd, tokens, admin) = orcd_with_operator(dir.path())?;
    let pool_args: Vec<String> = [
        "--port",
        "0",
        "--host-id",
        HOST_ID,
        "--orchestrator-url",
        &orcd.url,
        "--worker-token-file",
        &tokens.worker,
        "--model-base-dir",
        &model_base_dir().display().to_string(),
        "--log-dir",
        &dir.path().join("logs").display().to_string(),
        "--heartbeat-interval-ms",
        "200",
        "--drain-timeout-secs",
        "2",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    let mut pool = Daemon::start(
        "llorch-pool-managerd",
        &binary("llorch-pool-managerd"),
        &pool_args,
        &[],
    )?;
    let model = default_model_id();
    let runtime = runtime();
    let operator = reqwest::Client::new();
    let worker_id = runtime.block_on(async {
        let hosts_url = format!("{}/v2/hosts", orcd.url);
        wait_until(
            "the host to report the model on its disk",
            SCREEN_DEADLINE,
            || async {
                operator_get::<Vec<llorch_api::pool::HostInfo>>(&operator, &hosts_url)
                    .await
                    .is_ok_and(|hosts| {
                        hosts
                            .iter()
                            .flat_map(|host| &host.facts.models)
                            .any(|on_disk| on_disk.model == model)
                    })
            },
        )
        .await?;
        operator
            .post(format!("{}/v2/models/{model}/load", orcd.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?
            .error_for_status()
            .context("loading the model through the pool manager")?;
        let live = workers_seen_by(&operator, &orcd.url).await?;
        live.into_iter()
            .next()
            .context("no worker registered after the load")
    })?;

    let tmux = Tmux::new(tmux_program, "pool");
    tmux.start_shell("top")?;
    // A client token: it may look, not unload.
    tmux.type_line(
        "top",
        &top_command_line(dir.path(), &orcd.url, Some(&tokens.client)),
    )?;
    tmux.wait_for("top", "the host live in the Hosts pane", |screen| {
        (screen.contains("Hosts (1)")
            && row_cells(screen, &format!("{HOST_ID} "))
                .is_some_and(|cells| cells.get(1).map(String::as_str) == Some("live")))
        .then_some(())
    })?;
    tmux.keys("top", &["Tab"])?;
    tmux.wait_for("top", "`u unload` offered on the Queues pane", |screen| {
        screen.contains("u unload").then_some(())
    })?;
    tmux.keys("top", &["u"])?;
    tmux.wait_for("top", "the unload question", |screen| {
        screen
            .contains(&format!("Unload model {model}?"))
            .then_some(())
    })?;
    tmux.keys("top", &["y"])?;
    tmux.wait_for("top", "the refusal naming the token setting", |screen| {
        (screen.contains("403") && screen.contains("LLORCH_API_TOKEN_FILE")).then_some(())
    })?;
    tmux.keys("top", &["q"])?;
    tmux.assert_restored("top")?;

    // The operator's token: the worker's log through orcd, then the unload.
    let relayed: Vec<String> = runtime.block_on(async {
        let url = format!("{}/v2/workers/{worker_id}/log?lines=20", orcd.url);
        let tail: llorch_api::pool::LogTail = operator_get(&operator, &url).await?;
        anyhow::Ok(tail.lines)
    })?;
    ensure!(
        !relayed.is_empty(),
        "orcd relayed an empty log of {worker_id}"
    );
    tmux.type_line("top", "clear")?;
    tmux.type_line(
        "top",
        &top_command_line(dir.path(), &orcd.url, Some(&admin)),
    )?;
    // The Workers pane's ID column shows the first 10 characters of the pool's long ids.
    let worker_row = worker_id.chars().take(10).collect::<String>();
    tmux.wait_for("top", "the pool's worker live", |screen| {
        row_cells(screen, &worker_row)
            .is_some_and(|cells| cells.get(4).map(String::as_str) == Some("live"))
            .then_some(())
    })?;
    tmux.keys("top", &["l"])?;
    let title = format!("log of {worker_id} on host {HOST_ID}, through orcd");
    tmux.wait_for("top", "the worker's log relayed by orcd", |screen| {
        let shows_a_line = relayed.iter().any(|line| {
            let start: String = line.trim().chars().take(30).collect();
            !start.is_empty() && screen.contains(&start)
        });
        (screen.contains(&title) && shows_a_line).then_some(())
    })?;
    write_screen("pool-managed", &tmux.screen("top")?)?;
    tmux.keys("top", &["l", "Tab", "u", "y"])?;
    tmux.wait_for("top", "the model unloaded and its worker gone", |screen| {
        let said = screen.contains(&format!("unloading model {model}: stopping {worker_id}"));
        let left = row_cells(screen, &worker_row)
            .is_none_or(|cells| cells.get(4).map(String::as_str) == Some("dead"));
        (said && left).then_some(())
    })?;
    tmux.keys("top", &["q"])?;
    tmux.assert_restored("top")?;
    pool.terminate(SCREEN_DEADLINE)?;
    Ok(())
}

/// `GET url` with the operator's token, its JSON answer.
async fn operator_get<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
) -> anyhow::Result<T> {
    Ok(client
        .get(url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// The ids of the live workers orcd lists (operator token).
async fn workers_seen_by(client: &reqwest::Client, orcd_url: &str) -> anyhow::Result<Vec<String>> {
    let workers: Vec<llorch_api::WorkerInfo> =
        operator_get(client, &format!("{orcd_url}/workers")).await?;
    Ok(workers
        .into_iter()
        .filter(|worker| worker.state == llorch_api::WorkerState::Live)
        .map(|worker| worker.worker_id)
        .collect())
}

/// A job of the default model that runs until it is cancelled (its stream read to the end on
/// a task of its own, as a client does).
struct LongJob {
    job_id: String,
    events: tokio::task::JoinHandle<anyhow::Result<String>>,
}

impl LongJob {
    /// How the job's stream ended: the debug form of its last event.
    async fn finish(self) -> anyhow::Result<String> {
        tokio::time::timeout(SCREEN_DEADLINE, self.events)
            .await
            .context("the cancelled job's stream did not end")??
    }
}

async fn start_long_job(orcd_url: &str) -> anyhow::Result<LongJob> {
    let task = greedy_task("Once upon a time", 2000);
    let response = reqwest::Client::new()
        .post(format!("{orcd_url}/v2/tasks"))
        .bearer_auth(CLIENT_TOKEN)
        .json(&task)
        .send()
        .await?
        .error_for_status()?;
    let job_id = response
        .headers()
        .get(llorch_api::JOB_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .context("no job id header")?
        .to_owned();
    let events = tokio::spawn(async move {
        let mut events = eventsource_stream::Eventsource::eventsource(response.bytes_stream());
        let mut last = String::new();
        while let Some(event) = events.next().await {
            let event = event?;
            last = format!("{:?}", StreamEvent::from_sse(&event.event, &event.data)?);
        }
        Ok(last)
    });
    Ok(LongJob { job_id, events })
}

fn top_without_orcd_then_sigterm(tmux_program: &Path) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let tmux = Tmux::new(tmux_program, "sigterm");
    tmux.start_shell("top")?;
    tmux.type_line("top", &top_command_line(dir.path(), &url, None))?;
    tmux.wait_for("top", "the unreachable orcd named with its URL", |screen| {
        (screen.contains(&format!("could not reach orcd at {url}")) && screen.contains("retrying"))
            .then_some(())
    })?;
    let shell = tmux.format("top", "#{pane_pid}")?;
    let children = Command::new("ps")
        .args(["-o", "pid=", "--ppid", &shell])
        .output()?;
    let pid = String::from_utf8_lossy(&children.stdout).trim().to_owned();
    ensure!(
        !pid.is_empty() && !pid.contains('\n'),
        "top's pid under the shell: {pid:?}"
    );
    let killed = Command::new("kill").args(["-TERM", &pid]).status()?;
    ensure!(killed.success(), "kill -TERM {pid}");
    tmux.assert_restored("top")
}

/// Runs the built xtask with a private configuration and no token from the environment.
fn xtask(dir: &Path, args: &[&str], token_file: Option<&str>) -> Output {
    let mut command = Command::new(xtask_binary());
    command
        .args(args)
        .env_remove("LLORCH_API_TOKEN_FILE")
        .env("LLORCH_CONFIG_PATH", dir.join("config.toml"))
        .env("LLORCH_RUN_DIR", dir.join("run"));
    if let Some(path) = token_file {
        command.env("LLORCH_API_TOKEN_FILE", path);
    }
    command.output().expect("running xtask")
}

/// The rows of section `title` of a `--once` snapshot, each split on whitespace, after
/// checking that every row has as many cells as the header.
fn section(text: &str, title: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let mut lines = text
        .lines()
        .skip_while(|line| !line.starts_with(&format!("{title} (")));
    let heading = lines
        .next()
        .context(format!("no {title} section in\n{text}"))?;
    let count: usize = heading
        .trim_start_matches(title)
        .trim_matches(|c| c == ' ' || c == '(' || c == ')')
        .parse()?;
    let header: Vec<&str> = lines
        .next()
        .context("no header")?
        .split_whitespace()
        .collect();
    let rows: Vec<Vec<String>> = lines
        .take(count)
        .map(|line| line.split_whitespace().map(str::to_owned).collect())
        .collect();
    ensure!(
        rows.len() == count,
        "{title}: {count} announced, {} rows",
        rows.len()
    );
    for row in &rows {
        ensure!(
            row.len() == header.len(),
            "{title}: row {row:?} under {header:?}"
        );
    }
    Ok(rows)
}

fn once_snapshot_parses() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let orcd = start_orcd("127.0.0.1:0", &[])?;
    let _worker = start_worker(&orcd.url, 1, &["--worker-id", "once-a"])?;
    let runtime = runtime();
    runtime.block_on(wait_for_live_workers(&orcd.url, 1, SCREEN_DEADLINE))?;
    let events = runtime.block_on(async {
        submit(&orcd.url, &greedy_task("Hello", 4))
            .await?
            .collect()
            .await
    })?;
    ensure!(
        token_count(&events) > 0,
        "the job produced no tokens: {events:?}"
    );

    let once = || {
        xtask(
            dir.path(),
            &["top", "--once", "--orchestrator-url", &orcd.url],
            None,
        )
    };
    let (first, second) = (once(), once());
    ensure!(
        first.status.success(),
        "top --once failed: {}",
        String::from_utf8_lossy(&first.stderr)
    );
    let (first, second) = (
        String::from_utf8(first.stdout)?,
        String::from_utf8(second.stdout)?,
    );
    let workers = section(&first, "WORKERS")?;
    ensure!(
        workers.len() == 1
            && workers[0][0] == "once-a"
            && workers[0][4] == "live"
            && workers[0][5] == "0/1",
        "workers (the job ended, so its slot is free): {workers:?}"
    );
    let queues = section(&first, "QUEUES")?;
    ensure!(
        queues.len() == 1 && queues[0][0] == default_model_id(),
        "queues: {queues:?}"
    );
    let jobs = section(&first, "JOBS")?;
    ensure!(
        jobs.len() == 1 && jobs[0][2] == "once-a" && jobs[0][3] == "completed" && jobs[0][5] == "4",
        "jobs: {jobs:?}"
    );
    // Stable: a second look at an idle fleet gives the same queues and jobs.
    ensure!(section(&second, "QUEUES")? == queues && section(&second, "JOBS")? == jobs);

    let json = xtask(
        dir.path(),
        &["--json", "top", "--once", "--orchestrator-url", &orcd.url],
        None,
    );
    ensure!(json.status.success());
    let report: serde_json::Value = serde_json::from_slice(&json.stdout)?;
    ensure!(
        report["orchestrator_url"] == orcd.url.trim_end_matches('/'),
        "{report}"
    );
    ensure!(report["workers"][0]["worker_id"] == "once-a", "{report}");
    ensure!(report["jobs"][0]["generated_tokens"] == 4, "{report}");
    ensure!(report["jobs"][0]["state"] == "completed", "{report}");
    Ok(())
}

fn once_failures() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let down = xtask(
        dir.path(),
        &["top", "--once", "--orchestrator-url", &url],
        None,
    );
    let stderr = String::from_utf8_lossy(&down.stderr);
    ensure!(!down.status.success(), "top --once succeeded without orcd");
    ensure!(
        stderr.contains(&format!("could not reach orcd at {url}")),
        "{stderr}"
    );

    let (orcd, _tokens) = start_orcd_with_tokens(dir.path(), CLIENT_TOKEN, WORKER_TOKEN, &[])?;
    let refused = xtask(
        dir.path(),
        &["top", "--once", "--orchestrator-url", &orcd.url],
        None,
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    ensure!(
        !refused.status.success(),
        "top --once succeeded without a token"
    );
    ensure!(
        stderr.contains("401") && stderr.contains("LLORCH_API_TOKEN_FILE"),
        "{stderr}"
    );
    Ok(())
}

//! The web console in a real browser: headless Chromium driven over WebDriver (chromedriver)
//! against the real orcd (tokens on) and a real worker serving the chat model, all on loopback;
//! a host registered as a pool manager would be (its facts only) fills the Hosts page.
//! Screenshots of each page go to `target/console-screenshots/`.
//!
//! A custom harness (libtest-mimic) so that the test reports itself *ignored* — counted as
//! skipped by `cargo xtask test` — when Chromium or chromedriver is not installed; run
//! `cargo xtask dev setup` to install them.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use fantoccini::{Client, ClientBuilder, Locator};
use llorch_tests::*;
use serde_json::{json, Value};

const CHAT_MODEL: &str = "qwen2.5-coder-0.5b";
const CLIENT_TOKEN: &str = "client-token-for-the-console-test";
const WORKER_TOKEN: &str = "worker-token-for-the-console-test";
const TEST_NAME: &str =
    "the_console_shows_the_fleet_streams_and_stops_chats_and_never_renders_model_html";

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let browser = find_browser();
    if let Err(missing) = &browser {
        eprintln!("skipped: {missing}");
    }
    let trial = libtest_mimic::Trial::test(TEST_NAME, move || {
        let (chromium, chromedriver) = browser.map_err(|missing| missing.to_string())?;
        runtime()
            .block_on(console_in_a_browser(&chromium, &chromedriver))
            .map_err(|error| format!("{error:#}").into())
    })
    .with_ignored_flag(find_browser().is_err());
    libtest_mimic::run(&args, vec![trial]).exit();
}

/// Chromium and chromedriver from `PATH`.
fn find_browser() -> anyhow::Result<(PathBuf, PathBuf)> {
    let find = |names: &[&str]| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
            .find(|path| path.is_file())
    };
    match (
        find(&["chromium", "chromium-browser", "google-chrome"]),
        find(&["chromedriver"]),
    ) {
        (Some(chromium), Some(chromedriver)) => Ok((chromium, chromedriver)),
        _ => bail!(
            "the console's browser test needs `chromium` and `chromedriver` on PATH: run `cargo xtask dev setup` (Debian packages chromium, chromium-driver)"
        ),
    }
}

/// chromedriver on a free loopback port, killed on drop.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    async fn start(program: &Path) -> anyhow::Result<ChromeDriver> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(program)
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let driver = ChromeDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let status = format!("{}/status", driver.url);
        wait_until(
            "chromedriver to answer",
            Duration::from_secs(20),
            || async {
                reqwest::get(&status)
                    .await
                    .is_ok_and(|response| response.status().is_success())
            },
        )
        .await?;
        Ok(driver)
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where screenshots go: `target/console-screenshots/`.
fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("target/console-screenshots")
}

async fn screenshot(browser: &Client, name: &str) -> anyhow::Result<()> {
    let png = browser.screenshot().await.context("taking a screenshot")?;
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(format!("{name}.png")), png)?;
    Ok(())
}

/// Runs `script` (a function body; `arguments[i]` are `args`) in the page.
async fn js(browser: &Client, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
    browser
        .execute(script, args)
        .await
        .with_context(|| format!("running in the page: {script}"))
}

/// Polls `script` every 25 ms until it returns something other than `null`/`false`.
async fn wait_for(
    browser: &Client,
    what: &str,
    timeout: Duration,
    script: &str,
    args: Vec<Value>,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let value = js(browser, script, args.clone()).await?;
        if !value.is_null() && value != Value::Bool(false) {
            return Ok(value);
        }
        if Instant::now() > deadline {
            let page = js(browser, "return document.body.innerText", vec![]).await?;
            bail!("timed out after {timeout:?} waiting for {what}; the page shows:\n{page}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The worker row's "Free" cell, once the row shows `model`.
const FREE_SLOTS: &str = "
    const row = document.querySelector('#workers tbody tr[data-worker-id]');
    if (!row || row.querySelector('.model').textContent !== arguments[0]) return null;
    return row.querySelector('.slots-free').textContent === arguments[1];";

/// `lastTurn()` in the page: the transcript's last turn as [state, text, job id, stats].
const LAST_TURN_FN: &str = "function lastTurn() {
    const turn = [...document.querySelectorAll('#transcript .turn')].pop();
    if (!turn) return null;
    return [turn.dataset.state, turn.querySelector('.content').textContent,
            turn.dataset.jobId || null, turn.querySelector('.stats')?.textContent || ''];
}";

async fn task_state(orcd: &str, job_id: &str) -> anyhow::Result<String> {
    let job: Value = reqwest::Client::new()
        .get(format!("{orcd}/v2/tasks/{job_id}"))
        .bearer_auth(CLIENT_TOKEN)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(job["state"].as_str().unwrap_or_default().to_owned())
}

async fn busy_slots(orcd: &str) -> anyhow::Result<u64> {
    let workers: Value = reqwest::Client::new()
        .get(format!("{orcd}/workers"))
        .bearer_auth(CLIENT_TOKEN)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(workers[0]["slots_busy"].as_u64().unwrap_or(u64::MAX))
}

async fn console_in_a_browser(chromium: &Path, chromedriver: &Path) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (orcd, tokens) = start_orcd_with_tokens(dir.path(), CLIENT_TOKEN, WORKER_TOKEN, &[])?;
    let (client_tokens, worker_tokens) = (tokens.client, tokens.worker);
    // One slot: a running chat makes it 0 free, and its end makes it 1 again.
    let _worker = start_worker_for(
        CHAT_MODEL,
        &orcd.url,
        1,
        &["--worker-token-file", &worker_tokens],
    )?;
    wait_until(
        "the chat model to be served",
        Duration::from_secs(120),
        || async { busy_slots(&orcd.url).await.is_ok_and(|busy| busy == 0) },
    )
    .await?;

    register_host(&orcd.url).await?;

    let driver = ChromeDriver::start(chromedriver).await?;
    let profile = tempfile::tempdir()?;
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--window-size=1100,900",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .context("starting headless Chromium through chromedriver")?;
    let result = drive(&browser, &orcd.url, &client_tokens).await;
    // Close the browser whatever happened; the daemons stop on drop.
    let _ = browser.close().await;
    result
}

/// The host the Hosts page shows: registered as a pool manager does, with its facts (nothing
/// answers at its URL; orcd only reads what it reported).
const POOL_HOST: &str = "console-host";

async fn register_host(orcd: &str) -> anyhow::Result<()> {
    let facts = json!({
        "host_name": POOL_HOST, "os": "linux", "cpu_model": "test cpu", "physical_cores": 4,
        "ram_total_bytes": 8u64 << 30, "ram_available_bytes": 6u64 << 30, "load_average": 1.5,
        "gpus": [{"index": 0, "name": "test gpu", "memory_total_bytes": 4u64 << 30,
                  "memory_used_bytes": 1u64 << 30, "utilization_percent": 10.0}],
        "disk_free_bytes": 100u64 << 30,
        "models": [{"model": CHAT_MODEL, "file": "model.gguf", "bytes": 400u64 << 20,
                    "verified": true, "estimated_bytes": 600u64 << 20}],
        "workers": [], "memory_budget_bytes": 2u64 << 30, "backends": ["cpu"],
    });
    reqwest::Client::new()
        .post(format!("{orcd}/pools/register"))
        .bearer_auth(WORKER_TOKEN)
        .json(&json!({"host_id": POOL_HOST, "url": "http://127.0.0.1:9", "facts": facts}))
        .send()
        .await?
        .error_for_status()
        .context("registering the console test's host")?;
    Ok(())
}

async fn drive(browser: &Client, orcd: &str, client_tokens: &str) -> anyhow::Result<()> {
    let long = Duration::from_secs(90);

    // The page asks for the token: tokens are on and the tab has none yet.
    browser.goto(&format!("{orcd}/")).await?;
    wait_for(
        browser,
        "the token form after a 401",
        long,
        "return !document.getElementById('login').hidden \
         && document.getElementById('login-message').textContent.includes('401');",
        vec![],
    )
    .await?;
    let input = browser.find(Locator::Id("token-input")).await?;
    input.send_keys(CLIENT_TOKEN).await?;
    browser
        .find(Locator::Id("token-submit"))
        .await?
        .click()
        .await?;

    // The worker's row: its model and one free slot.
    wait_for(
        browser,
        "the worker's row with the chat model and 1 free slot",
        long,
        FREE_SLOTS,
        vec![json!(CHAT_MODEL), json!("1")],
    )
    .await?;
    let url = js(browser, "return location.href", vec![]).await?;
    ensure!(
        !url.as_str().unwrap_or_default().contains(CLIENT_TOKEN),
        "the token leaked into the URL: {url}"
    );
    screenshot(browser, "fleet").await?;

    // The Hosts page: the host's bars and models on disk, and the chat model's row, loaded.
    browser
        .find(Locator::Id("nav-hosts"))
        .await?
        .click()
        .await?;
    wait_for(
        browser,
        "the host's row with its RAM, budget and GPU bars",
        long,
        "const row = document.querySelector(`#hosts tbody tr[data-host='${arguments[0]}']`);          if (!row) return null;          return row.querySelectorAll('meter').length === 4            && row.textContent.includes('RAM 2048 MiB / 8192 MiB')            && row.textContent.includes('GPU 0 1024 MiB / 4096 MiB')            && row.textContent.includes(arguments[1]);",
        vec![json!(POOL_HOST), json!(CHAT_MODEL)],
    )
    .await?;
    wait_for(
        browser,
        "the chat model's row: loaded, with Unload enabled and Load not",
        long,
        "const row = document.querySelector(`#model-status tbody tr[data-model='${arguments[0]}']`);          if (!row) return null;          const [load, unload] = row.querySelectorAll('button');          return row.cells[1].textContent === 'loaded' && load.disabled && !unload.disabled;",
        vec![json!(CHAT_MODEL)],
    )
    .await?;
    screenshot(browser, "hosts").await?;

    // A chat: the answer grows in at least three steps before it is done.
    browser.find(Locator::Id("nav-chat")).await?.click().await?;
    wait_for(
        browser,
        "the chat model to be picked in chat mode",
        long,
        "return document.getElementById('chat-model').value === arguments[0] \
         && document.getElementById('chat-mode').value === 'chat';",
        vec![json!(CHAT_MODEL)],
    )
    .await?;
    js(
        browser,
        "document.getElementById('chat-temperature').value = '0'; \
         document.getElementById('chat-max-tokens').value = '40';",
        vec![],
    )
    .await?;
    let message = browser.find(Locator::Id("chat-input")).await?;
    message
        .send_keys("Name ten fruits, one per line, as a numbered list.")
        .await?;
    browser
        .find(Locator::Id("chat-send"))
        .await?
        .click()
        .await?;
    let mut steps: Vec<String> = Vec::new();
    let deadline = Instant::now() + long;
    let last_turn = format!("{LAST_TURN_FN} return lastTurn();");
    let stats = loop {
        let turn = js(browser, &last_turn, vec![]).await?;
        let (state, text) = (
            turn[0].as_str().unwrap_or_default(),
            turn[1].as_str().unwrap_or_default(),
        );
        if !text.is_empty() && steps.last().map(String::as_str) != Some(text) {
            steps.push(text.to_owned());
        }
        match state {
            "done" => break turn[3].as_str().unwrap_or_default().to_owned(),
            "error" | "stopped" => bail!("the chat ended `{state}`: {turn}"),
            _ => {}
        }
        ensure!(Instant::now() < deadline, "the chat never finished: {turn}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    ensure!(
        steps.len() >= 3,
        "the answer arrived in {} step(s), not streamed: {steps:?}",
        steps.len()
    );
    ensure!(
        stats.contains("first token") && stats.contains("tok/s"),
        "no time to first token or tok/s under the answer: {stats}"
    );
    screenshot(browser, "chat").await?;

    // Stop mid-answer: the job is cancelled and the slot is free again.
    js(
        browser,
        "document.getElementById('chat-max-tokens').value = '2000';",
        vec![],
    )
    .await?;
    message
        .send_keys("Count from 1 to 1000, separated by commas.")
        .await?;
    browser
        .find(Locator::Id("chat-send"))
        .await?
        .click()
        .await?;
    let streaming = wait_for(
        browser,
        "the long answer to start streaming",
        long,
        &format!("{LAST_TURN_FN} const t = lastTurn(); return t && t[0] === 'streaming' && t[1].length > 0 && t[2] ? t : null;"),
        vec![],
    )
    .await?;
    let job_id = streaming[2].as_str().unwrap_or_default().to_owned();
    wait_for(
        browser,
        "the worker's row to show 0 free slots while the answer streams",
        long,
        FREE_SLOTS,
        vec![json!(CHAT_MODEL), json!("0")],
    )
    .await?;
    browser
        .find(Locator::Id("chat-stop"))
        .await?
        .click()
        .await?;
    wait_for(
        browser,
        "the answer to show `stopped`",
        long,
        &format!("{LAST_TURN_FN} const t = lastTurn(); return t && t[0] === 'stopped';"),
        vec![],
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while task_state(orcd, &job_id).await? != "cancelled" {
        ensure!(
            Instant::now() < deadline,
            "job {job_id} is `{}` in /v2/tasks, not cancelled",
            task_state(orcd, &job_id).await?
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_until("the slot to be free in /workers", long, || async {
        busy_slots(orcd).await.is_ok_and(|busy| busy == 0)
    })
    .await?;
    browser
        .find(Locator::Id("nav-fleet"))
        .await?
        .click()
        .await?;
    wait_for(
        browser,
        "the stopped job as cancelled and the slot free in the Fleet page",
        long,
        &format!(
            "const job = document.querySelector('#jobs tr[data-job-id=\"' + arguments[2] + '\"]'); \
             if (!job || job.dataset.state !== 'cancelled') return null; {FREE_SLOTS}"
        ),
        vec![json!(CHAT_MODEL), json!("1"), json!(job_id)],
    )
    .await?;

    // A job submitted from outside appears live (no reload), and its Cancel button works.
    js(browser, "window.consoleTestMarker = 'same page';", vec![]).await?;
    let known = js(
        browser,
        "return [...document.querySelectorAll('#jobs tbody tr')].map(row => row.dataset.jobId);",
        vec![],
    )
    .await?;
    let mut outside = Command::new(xtask_binary())
        .args(["--no-color", "jobs", "submit", "--orchestrator-url", orcd])
        .args(["--model", CHAT_MODEL, "--prompt", "def fibonacci(n):"])
        .args(["--max-tokens", "2000"])
        .env("LLORCH_API_TOKEN_FILE", client_tokens)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running `xtask jobs submit`")?;
    let appeared = wait_for(
        browser,
        "the outside job to appear running",
        long,
        "const row = [...document.querySelectorAll('#jobs tbody tr')]
            .find(row => !arguments[0].includes(row.dataset.jobId));
         return row && row.dataset.state === 'running' && row.cells[2].textContent === arguments[1]
            ? row.dataset.jobId : null;",
        vec![known, json!(CHAT_MODEL)],
    )
    .await;
    let appeared = match appeared {
        Ok(job) => job,
        Err(error) => {
            let _ = outside.kill();
            return Err(error);
        }
    };
    let outside_job = appeared.as_str().unwrap_or_default().to_owned();
    screenshot(browser, "fleet-running").await?;
    js(
        browser,
        "document.querySelector('#jobs tr[data-job-id=\"' + arguments[0] + '\"] button.cancel').focus();",
        vec![json!(outside_job)],
    )
    .await?;
    // Pressed from the keyboard: the button has focus, Enter activates it.
    browser
        .active_element()
        .await?
        .send_keys(&fantoccini::key::Key::Enter.to_string())
        .await?;
    wait_for(
        browser,
        "the outside job to be cancelled in the page",
        long,
        "const row = document.querySelector('#jobs tr[data-job-id=\"' + arguments[0] + '\"]');
         return row && row.dataset.state === 'cancelled' && window.consoleTestMarker === 'same page';",
        vec![json!(outside_job)],
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if outside.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = outside.kill();
            bail!("`xtask jobs submit` kept running after its job was cancelled");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(task_state(orcd, &outside_job).await? == "cancelled");

    // Throughput: the charts have lines.
    browser
        .find(Locator::Id("nav-throughput"))
        .await?
        .click()
        .await?;
    wait_for(
        browser,
        "the throughput charts to draw",
        long,
        "return document.querySelectorAll('#chart-tps polyline').length > 0 \
         && document.querySelectorAll('#chart-queue polyline').length > 0;",
        vec![],
    )
    .await?;
    screenshot(browser, "throughput").await?;

    // A stored conversation whose model output is HTML and script: shown as text, no element.
    let hostile = "<img src=x onerror=\"window.consoleTestPwned=1\"> and <script>window.consoleTestPwned=2</script>\n\n```html\n<b id=\"bold\">not bold</b>\n```\n\n**really bold** <iframe src=\"/\"></iframe>";
    let conversation = json!({
        "model": CHAT_MODEL,
        "mode": "chat",
        "system": "",
        "temperature": 0,
        "maxTokens": 64,
        "turns": [
            {"role": "user", "content": "<u>hello</u>"},
            {"role": "assistant", "content": hostile, "state": "done"},
        ],
    });
    js(
        browser,
        "localStorage.setItem('llorch.console.conversation', arguments[0]);",
        vec![json!(conversation.to_string())],
    )
    .await?;
    browser.goto(&format!("{orcd}/#chat")).await?;
    browser.refresh().await?;
    let rendered = wait_for(
        browser,
        "the stored conversation to be shown",
        long,
        "const turns = document.querySelectorAll('#transcript .turn');
         if (turns.length !== 2) return null;
         return {
           text: turns[1].querySelector('.content').textContent,
           user: turns[0].querySelector('.content').textContent,
           elements: [...document.querySelectorAll('#transcript *')].map(e => e.tagName.toLowerCase()),
           pwned: window.consoleTestPwned || null,
           live: document.getElementById('connection').dataset.state,
         };",
        vec![],
    )
    .await?;
    let elements: Vec<&str> = rendered["elements"]
        .as_array()
        .context("element list")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for forbidden in ["img", "script", "b", "iframe", "u"] {
        ensure!(
            !elements.contains(&forbidden),
            "a <{forbidden}> element was created from model output: {rendered}"
        );
    }
    ensure!(
        elements.contains(&"pre") && elements.contains(&"strong"),
        "{rendered}"
    );
    ensure!(
        rendered["pwned"].is_null(),
        "model output ran script: {rendered}"
    );
    let text = rendered["text"].as_str().unwrap_or_default();
    ensure!(
        text.contains("<img src=x onerror=") && text.contains("<b id=\"bold\">not bold</b>"),
        "the HTML is not shown as text: {text}"
    );
    ensure!(rendered["user"] == "<u>hello</u>", "{rendered}");
    screenshot(browser, "chat-stored").await?;

    // Phone width: nothing overflows the page sideways (tables scroll in their own box).
    browser.set_window_size(375, 800).await?;
    for page in ["fleet", "chat", "throughput"] {
        browser
            .find(Locator::Id(&format!("nav-{page}")))
            .await?
            .click()
            .await?;
        let overflow = js(
            browser,
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            vec![],
        )
        .await?;
        ensure!(
            overflow.as_i64() == Some(0),
            "the {page} page is {overflow} px wider than a 375 px screen"
        );
        screenshot(browser, &format!("{page}-phone")).await?;
    }
    Ok(())
}

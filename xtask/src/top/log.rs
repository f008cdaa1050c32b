//! The log pane's source: the log file of a worker started on this machine by `pool worker
//! spawn` or `up`, found in the run directory under the worker's id; else, for a worker a pool
//! manager runs, the tail orcd relays from that pool manager (fetched by the poller in
//! `feed`, so the view never waits for it).

use std::time::{Duration, Instant};

use crate::daemon::RunDir;

use super::feed::{RemoteLogWanted, LOG_LINES};
use super::render::LogTail;

/// How long a local log read stays fresh before the pane reads the file again.
const REREAD_AFTER: Duration = Duration::from_millis(500);

pub struct LogFollower {
    run_dir: Option<RunDir>,
    pub tail: LogTail,
    last_read: Option<(String, Instant)>,
    /// The remote worker the poller fetches the log of, shared with it.
    wanted: RemoteLogWanted,
    /// The last tail the poller brought: the worker and its lines or why there are none.
    remote: Option<(String, Result<Vec<String>, String>)>,
}

impl LogFollower {
    pub fn new(wanted: RemoteLogWanted) -> LogFollower {
        LogFollower {
            run_dir: RunDir::from_env().ok(),
            tail: LogTail::default(),
            last_read: None,
            wanted,
            remote: None,
        }
    }

    fn want_remote(&self, worker_id: Option<&str>) {
        *self
            .wanted
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = worker_id.map(str::to_owned);
    }

    /// The pane is closed: the poller stops fetching.
    pub fn stop(&mut self) {
        self.want_remote(None);
        self.last_read = None;
    }

    /// A tail the poller fetched through orcd.
    pub fn remote_arrived(&mut self, worker_id: String, lines: Result<Vec<String>, String>) {
        self.remote = Some((worker_id, lines));
        // Shown at the next `follow`.
        self.last_read = None;
    }

    /// Reads the tail again when the selection changed or a moment passed. `host` is the pool
    /// manager's host that runs the worker, when one lists it.
    pub fn follow(&mut self, worker: Option<(&str, Option<&str>)>) {
        let Some((worker_id, host)) = worker else {
            self.tail = LogTail {
                title: "log".into(),
                lines: vec!["select a worker in the Workers pane to follow its log".into()],
            };
            self.stop();
            return;
        };
        let fresh = self
            .last_read
            .as_ref()
            .is_some_and(|(id, at)| id == worker_id && at.elapsed() < REREAD_AFTER);
        if fresh {
            return;
        }
        let local = read_log(self.run_dir.as_ref(), worker_id);
        self.tail = match (local, host) {
            (Ok(tail), _) => {
                self.want_remote(None);
                tail
            }
            (Err(_), Some(host)) => {
                self.want_remote(Some(worker_id));
                self.remote_tail(worker_id, host)
            }
            (Err(missing), None) => {
                self.want_remote(None);
                missing
            }
        };
        self.last_read = Some((worker_id.to_owned(), Instant::now()));
    }

    fn remote_tail(&self, worker_id: &str, host: &str) -> LogTail {
        let title = format!("log of {worker_id} on host {host}, through orcd");
        let lines = match &self.remote {
            Some((id, Ok(lines))) if id == worker_id => lines.clone(),
            Some((id, Err(why))) if id == worker_id => vec![why.clone()],
            _ => vec![format!("asking orcd for the log of {worker_id}…")],
        };
        LogTail { title, lines }
    }
}

/// The local log file's tail, or the pane's explanation of why there is none.
fn read_log(run_dir: Option<&RunDir>, worker_id: &str) -> Result<LogTail, LogTail> {
    let Some(run_dir) = run_dir else {
        return Err(LogTail {
            title: format!("log of {worker_id}"),
            lines: vec![
                "no run directory: set LLORCH_RUN_DIR to where `pool worker spawn` keeps logs"
                    .into(),
            ],
        });
    };
    let path = run_dir.log_path(worker_id);
    match crate::daemon::tail_lines(&path, LOG_LINES) {
        Ok(lines) => Ok(LogTail {
            title: format!("log of {worker_id}: {}", path.display()),
            lines,
        }),
        Err(_) => Err(LogTail {
            title: format!("log of {worker_id}"),
            lines: vec![format!(
                "no log at {}: only workers started on this machine by `cargo xtask pool worker spawn` or `up` have one here, and those a pool manager runs are read through orcd",
                path.display()
            )],
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_pane_reads_a_local_workers_log_from_the_run_directory() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = RunDir::at(dir.path());
        std::fs::write(
            run_dir.log_path("cpu-a"),
            "loading model\nlistening on :9001\n",
        )
        .unwrap();
        let tail = read_log(Some(&run_dir), "cpu-a").unwrap();
        assert_eq!(tail.lines, ["loading model", "listening on :9001"]);
        assert!(tail.title.starts_with("log of cpu-a: "), "{}", tail.title);

        let elsewhere = read_log(Some(&run_dir), "gpu-box-1").unwrap_err();
        assert!(
            elsewhere.lines[0].starts_with("no log at ")
                && elsewhere.lines[0].contains("pool worker spawn"),
            "{:?}",
            elsewhere.lines
        );
    }

    #[test]
    fn a_pool_managed_worker_without_a_local_log_is_fetched_through_orcd() {
        let dir = tempfile::tempdir().unwrap();
        let wanted = RemoteLogWanted::default();
        let mut follower = LogFollower {
            run_dir: Some(RunDir::at(dir.path())),
            ..LogFollower::new(wanted.clone())
        };
        follower.follow(Some(("gpu-box-1", Some("gpu-box"))));
        assert_eq!(wanted.lock().unwrap().as_deref(), Some("gpu-box-1"));
        assert_eq!(
            follower.tail.title,
            "log of gpu-box-1 on host gpu-box, through orcd"
        );
        assert_eq!(
            follower.tail.lines,
            ["asking orcd for the log of gpu-box-1…"]
        );

        follower.remote_arrived("gpu-box-1".into(), Ok(vec!["listening on :9001".into()]));
        follower.follow(Some(("gpu-box-1", Some("gpu-box"))));
        assert_eq!(follower.tail.lines, ["listening on :9001"]);
        follower.remote_arrived("gpu-box-1".into(), Err("orcd answered 403".into()));
        follower.follow(Some(("gpu-box-1", Some("gpu-box"))));
        assert_eq!(follower.tail.lines, ["orcd answered 403"]);

        // A worker no pool manager lists has no remote log to fetch.
        follower.follow(Some(("by-hand", None)));
        assert_eq!(*wanted.lock().unwrap(), None);
        assert!(follower.tail.lines[0].starts_with("no log at "));
    }
}

//! Network-namespace helpers shared by the tests that run hosts in namespaces
//! (`remote_netns`, `multihost_netns`, `fleet_netns`).

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command};

/// Runs `ip ARGS`; its stderr is the error.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|error| format!("running `ip`: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Runs `f` on a thread that has joined network namespace `netns` (threads it starts, such as
/// an HTTP client's runtime, join it too).
pub fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let handle = std::fs::File::open(Path::new("/run/netns").join(netns)).unwrap();
                // SAFETY: a valid namespace fd; setns changes only this thread's namespace.
                let result = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(result, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap()
    })
}

/// A child process (a namespace's sshd, a worker) killed on drop.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

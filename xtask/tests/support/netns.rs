//! Network-namespace helpers shared by the tests that run hosts in namespaces
//! (`remote_netns`, `multihost_netns`, `fleet_netns`, `pool_fleet_netns`).

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

/// Three namespaces on one bridge: `operator` (holds the bridge) at .1, `b` at .2, `c` at .3.
/// Names start with `lo-{tag}-` and the subnet depends on the tag, so two tests never share
/// one.
pub struct Namespaces {
    pub operator: String,
    pub b: String,
    pub c: String,
    subnet: String,
}

impl Namespaces {
    pub fn create(tag: &str) -> Result<Namespaces, String> {
        let id = std::process::id();
        let tag_offset: u32 = tag.bytes().map(u32::from).sum::<u32>() % 30;
        let namespaces = Namespaces {
            operator: format!("lo-{tag}-o-{id}"),
            b: format!("lo-{tag}-b-{id}"),
            c: format!("lo-{tag}-c-{id}"),
            subnet: format!("10.{}.{}", 214 + tag_offset, id % 200 + 20),
        };
        for netns in [&namespaces.operator, &namespaces.b, &namespaces.c] {
            ip(&["netns", "add", netns])?;
            ip(&["-n", netns, "link", "set", "lo", "up"])?;
        }
        let bridge = format!("lo{tag}{}", id % 100_000);
        let o = &namespaces.operator;
        ip(&["-n", o, "link", "add", &bridge, "type", "bridge"])?;
        ip(&["-n", o, "link", "set", &bridge, "up"])?;
        ip(&[
            "-n",
            o,
            "addr",
            "add",
            &format!("{}.1/24", namespaces.subnet),
            "dev",
            &bridge,
        ])?;
        for (netns, suffix, host) in [(&namespaces.b, "b", 2), (&namespaces.c, "c", 3)] {
            let outer = format!("{tag}{suffix}o{}", id % 100_000);
            let inner = format!("{tag}{suffix}i{}", id % 100_000);
            ip(&[
                "link", "add", &outer, "netns", o, "type", "veth", "peer", "name", &inner, "netns",
                netns,
            ])?;
            ip(&["-n", o, "link", "set", &outer, "master", &bridge])?;
            ip(&["-n", o, "link", "set", &outer, "up"])?;
            ip(&[
                "-n",
                netns,
                "addr",
                "add",
                &format!("{}.{host}/24", namespaces.subnet),
                "dev",
                &inner,
            ])?;
            ip(&["-n", netns, "link", "set", &inner, "up"])?;
        }
        Ok(namespaces)
    }

    pub fn address(&self, host: u8) -> String {
        format!("{}.{host}", self.subnet)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for netns in [&self.operator, &self.b, &self.c] {
            let _ = ip(&["netns", "del", netns]);
        }
    }
}

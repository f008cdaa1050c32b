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
    /// The operator's ends of the `b` and `c` links (on its bridge).
    links: [String; 2],
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
            links: ["b", "c"].map(|suffix| format!("{tag}{suffix}o{}", id % 100_000)),
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
        for (netns, host) in [(&namespaces.b, 2u8), (&namespaces.c, 3u8)] {
            let outer = namespaces.links[usize::from(host - 2)].clone();
            let inner = format!(
                "{tag}{}i{}",
                ["b", "c"][usize::from(host - 2)],
                id % 100_000
            );
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

    /// Takes the link of namespace `netns` (`b` or `c`) down or up on the operator's bridge:
    /// the host drops off the network as a pulled cable or a dead switch port would have it,
    /// while its processes keep running.
    pub fn set_link(&self, netns: &str, up: bool) -> Result<(), String> {
        let index = match netns {
            _ if netns == self.b => 0,
            _ if netns == self.c => 1,
            _ => {
                return Err(format!(
                    "`{netns}` is neither `b` nor `c` of these namespaces"
                ))
            }
        };
        let state = if up { "up" } else { "down" };
        ip(&[
            "-n",
            &self.operator,
            "link",
            "set",
            &self.links[index],
            state,
        ])
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for netns in [&self.operator, &self.b, &self.c] {
            let _ = ip(&["netns", "del", netns]);
        }
    }
}

/// Why namespaces cannot be made here (`lo-{tag}-probe-*` is made and deleted), or `None`.
pub fn netns_unavailable(tag: &str) -> Option<String> {
    // SAFETY: geteuid has no side effects.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".to_owned());
    }
    let probe = format!("lo-{tag}-probe-{}", std::process::id());
    match ip(&["netns", "add", &probe]) {
        Ok(()) => {
            let _ = ip(&["netns", "del", &probe]);
            None
        }
        Err(error) => Some(error),
    }
}

/// Two fleet hosts `hb` (in `b`) and `c` (in `c`), each with its own sshd sharing this
/// machine's release binaries and model directory (both must hold `models`), and the
/// operator's config (in `hb`'s local side) naming both.
pub fn two_fleet_hosts(namespaces: &Namespaces, models: &[&str]) -> (super::Sshd, super::Sshd) {
    let bin_dir = std::env::var_os("LLORCH_BIN_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| super::repo_root().join("target/release"));
    let model_base_dir = std::env::var_os("LLORCH_MODEL_BASE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(llorch_catalog::default_model_base_dir);
    let catalog = llorch_catalog::Catalog::builtin();
    for model in models {
        let entry = catalog.get(model).expect("a catalog model");
        assert!(
            llorch_catalog::model_path(&model_base_dir, entry).is_file(),
            "run `cargo xtask models download {model}` first"
        );
    }
    let host_options = |netns: &str, address: String| super::SshdOptions {
        netns: Some(netns.to_owned()),
        listen: address.parse().unwrap(),
        remote_bin_dir: Some(bin_dir.clone()),
        remote_model_base_dir: Some(model_base_dir.clone()),
    };
    let sshd_b = super::Sshd::start_with(host_options(&namespaces.b, namespaces.address(2)));
    let sshd_c = super::Sshd::start_with(host_options(&namespaces.c, namespaces.address(3)));
    // The operator's config: both hosts, reached with their own keys.
    std::fs::write(
        &sshd_b.local.config_path,
        format!(
            "version = 1\n\n[remote]\nssh_timeout = 5\n\n{}\n{}",
            sshd_b.profile_toml("hb"),
            sshd_c.profile_toml("hc")
        ),
    )
    .unwrap();
    (sshd_b, sshd_c)
}

/// Writes a token file as its owner alone may read it.
pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

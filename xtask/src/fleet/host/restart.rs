//! Restarting a fleet worker that runs and answers, with new settings.
//!
//! Where the host has the memory for a second copy, the new settings start first, beside the
//! running worker, as a stand-in (its name with `-next`, on a free port). Only when the stand-in
//! is live in orcd does the old worker stop; the worker then starts again under its own name and
//! port with the settings just proven, and the stand-in stops. The model keeps a live worker
//! throughout, and settings that fail — a model that does not load, an address orcd refuses —
//! leave the running worker untouched.
//!
//! Where two copies do not fit (by the model file's estimate against the memory available), on a
//! GPU backend (whose free memory is not read here), or where the advertised URL's port is not
//! the one the worker listens on (so a stand-in on another port could not be reached), the
//! restart is in place: stop, start, and start again with the previous settings if the new ones
//! fail.

use anyhow::Context as _;
use llorch_api::Backend;

use super::{stop, stop_as, WorkerSpec};
use crate::{daemon::RunDir, fleet::plan::ActualWorker, fleet::plan::Running, Context};

/// Appended to a worker's name for the stand-in that runs its new settings during a restart.
pub const STAND_IN_SUFFIX: &str = "-next";

/// How a restart goes, and why when it cannot run the new settings beside the old first.
#[derive(Debug, PartialEq, Eq)]
pub enum Order {
    Beside,
    InPlace { why: String },
}

/// What a restart needs to know of the host.
pub struct Host {
    /// The estimated bytes of a worker with the new settings; `None` when the model file's
    /// metadata could not be read (the stand-in then tries, and a failure touches nothing).
    pub needed_bytes: Option<u64>,
    /// MemAvailable; `None` where the system does not say.
    pub available_bytes: Option<u64>,
}

/// Beside or in place, by the rules in the module doc.
pub fn order(spec: &WorkerSpec, host: &Host) -> Order {
    if spec.launch.backend != Backend::Cpu {
        return Order::InPlace {
            why: format!(
                "the free memory of a {} GPU is not checked for a second copy",
                spec.launch.backend
            ),
        };
    }
    if advertised_port(&spec.advertise_url) != Some(spec.port) {
        return Order::InPlace {
            why: format!(
                "its advertised URL {} is not on the port it listens on ({}), so a stand-in on another port could not be reached",
                spec.advertise_url, spec.port
            ),
        };
    }
    if spec.name.len() + STAND_IN_SUFFIX.len() > llorch_api::validation::MAX_ID_LEN {
        return Order::InPlace {
            why: "its name is too long for a stand-in's".to_owned(),
        };
    }
    match (host.needed_bytes, host.available_bytes) {
        (Some(needed), Some(available)) if needed > available => Order::InPlace {
            why: format!(
                "a second copy needs about {} MiB and {} MiB are available",
                needed >> 20,
                available >> 20
            ),
        },
        _ => Order::Beside,
    }
}

/// The stand-in for `spec`: the same launch under `NAME-next`, on `port`.
pub fn stand_in(spec: &WorkerSpec, port: u16) -> anyhow::Result<WorkerSpec> {
    let mut url = reqwest::Url::parse(&spec.advertise_url)
        .with_context(|| format!("reading the advertised URL {}", spec.advertise_url))?;
    url.set_port(Some(port))
        .map_err(|()| anyhow::anyhow!("the advertised URL {} takes no port", spec.advertise_url))?;
    let mut advertise_url = url.to_string();
    // Url writes `http://host:port/` for `http://host:port`; orcd refuses a worker URL with a path.
    if url.path() == "/" && !spec.advertise_url.ends_with('/') {
        advertise_url.pop();
    }
    Ok(WorkerSpec {
        name: format!("{}{STAND_IN_SUFFIX}", spec.name),
        port,
        advertise_url,
        ..spec.clone()
    })
}

fn advertised_port(url: &str) -> Option<u16> {
    reqwest::Url::parse(url).ok()?.port_or_known_default()
}

/// A restart of the worker `current`, which ran `previous`, with `spec`. `launch` starts a
/// worker and returns once orcd lists it live (or fails with the reason).
pub struct Restart<'a> {
    pub cx: &'a Context,
    pub run_dir: &'a RunDir,
    pub spec: &'a WorkerSpec,
    pub previous: &'a WorkerSpec,
    pub current: Option<&'a ActualWorker>,
    pub supervisor: Running,
    pub launch: &'a dyn Fn(&WorkerSpec) -> anyhow::Result<()>,
}

impl Restart<'_> {
    /// Beside or in place, in the order [`order`] gives for this host.
    pub fn run(&self) -> anyhow::Result<()> {
        let host = Host {
            needed_bytes: needed_bytes(self.cx, self.spec),
            available_bytes: crate::pool::status::memory_available(),
        };
        match order(self.spec, &host) {
            Order::Beside => self.beside(),
            Order::InPlace { why } => {
                self.cx
                    .out
                    .status(format!("{}: restarting in place: {why}", self.spec.name));
                self.replace()
            }
        }
    }

    fn beside(&self) -> anyhow::Result<()> {
        let name = &self.spec.name;
        let port = crate::ports::free_port(self.spec.bind)?;
        let stand_in = stand_in(self.spec, port)?;
        self.cx.out.status(format!(
            "{name}: starting the new settings beside it as {} on port {port}",
            stand_in.name
        ));
        if let Err(error) = (self.launch)(&stand_in) {
            let error = error.context(format!(
                "the new settings never became live beside the running worker (tried as {} on port {port}); {name} runs on with its previous settings, untouched",
                stand_in.name
            ));
            return Err(
                match stop_as(self.run_dir, &stand_in.name, self.supervisor) {
                    Ok(()) => error,
                    Err(cleanup) => {
                        error.context(format!("stopping the stand-in failed too: {cleanup:#}"))
                    }
                },
            );
        }
        self.cx.out.status(format!(
            "{name}: {} is live; replacing the old worker",
            stand_in.name
        ));
        let replaced = self.replace();
        let stopped = stop_as(self.run_dir, &stand_in.name, self.supervisor)
            .with_context(|| format!("stopping the stand-in {} after the restart", stand_in.name));
        replaced.and(stopped)
    }

    /// Stops the old worker and starts the new settings under its name; a replacement that never
    /// became live gives the place back to the worker that answered before, started again with
    /// the settings it ran with.
    fn replace(&self) -> anyhow::Result<()> {
        let name = &self.spec.name;
        stop(self.run_dir, name, self.current)
            .and_then(|()| (self.launch)(self.spec))
            .map_err(|error| {
                self.cx.out.status(format!(
                    "{name}: the new settings failed; starting it again as it ran before"
                ));
                match (self.launch)(self.previous) {
                    Ok(()) => {
                        error.context("the worker was started again with its previous settings")
                    }
                    Err(again) => error.context(format!(
                        "starting it again with its previous settings failed too: {again:#}"
                    )),
                }
            })
    }
}

/// The memory estimate of a worker with `spec`'s launch, from its model file on this host.
fn needed_bytes(cx: &Context, spec: &WorkerSpec) -> Option<u64> {
    let path = crate::models::installed_file(cx, &spec.launch.model).ok()??;
    llorch_catalog::estimate_model_file(
        &path,
        spec.launch.slots_or_default(),
        spec.launch.ctx_size_or_default(),
    )
    .ok()
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use llorch_api::pool::WorkerLaunch;

    use super::*;

    fn worker(advertise_url: &str, port: u16) -> WorkerSpec {
        WorkerSpec {
            name: "box-gemma".to_owned(),
            launch: WorkerLaunch::of_model("gemma3-270m"),
            port,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            advertise_url: advertise_url.to_owned(),
            orchestrator_url: "http://127.0.0.1:8080".to_owned(),
        }
    }

    fn host(needed_mib: Option<u64>, available_mib: Option<u64>) -> Host {
        Host {
            needed_bytes: needed_mib.map(|mib| mib << 20),
            available_bytes: available_mib.map(|mib| mib << 20),
        }
    }

    #[test]
    fn a_cpu_worker_with_room_for_two_copies_restarts_beside() {
        let spec = worker("http://10.0.0.2:9001", 9001);
        assert_eq!(order(&spec, &host(Some(400), Some(4000))), Order::Beside);
        assert_eq!(order(&spec, &host(None, Some(4000))), Order::Beside);
        assert_eq!(order(&spec, &host(Some(400), None)), Order::Beside);
    }

    #[test]
    fn no_room_a_gpu_or_a_mapped_port_restart_in_place_and_say_why() {
        let Order::InPlace { why } = order(
            &worker("http://10.0.0.2:9001", 9001),
            &host(Some(5000), Some(4000)),
        ) else {
            panic!("no room must restart in place");
        };
        assert_eq!(
            why,
            "a second copy needs about 5000 MiB and 4000 MiB are available"
        );

        let mut gpu = worker("http://10.0.0.2:9001", 9001);
        gpu.launch.backend = Backend::Cuda;
        assert!(
            matches!(order(&gpu, &host(Some(1), Some(4000))), Order::InPlace { why } if why.contains("cuda GPU"))
        );

        let mapped = worker("http://gateway.lan:80", 9001);
        assert!(
            matches!(order(&mapped, &host(Some(1), Some(4000))), Order::InPlace { why } if why.contains("not on the port it listens on"))
        );
        let implicit = worker("http://gateway.lan", 9001);
        assert!(matches!(
            order(&implicit, &host(Some(1), Some(4000))),
            Order::InPlace { .. }
        ));
    }

    #[test]
    fn the_stand_in_runs_the_same_launch_under_its_own_name_and_port() {
        let spec = worker("http://10.0.0.2:9001", 9001);
        let next = stand_in(&spec, 40123).unwrap();
        assert_eq!(next.name, "box-gemma-next");
        assert_eq!(next.port, 40123);
        assert_eq!(next.advertise_url, "http://10.0.0.2:40123");
        assert_eq!(next.launch, spec.launch);
        assert_eq!(next.bind, spec.bind);

        let ipv6 = stand_in(&worker("http://[fd00::6]:9001", 9001), 9002).unwrap();
        assert_eq!(ipv6.advertise_url, "http://[fd00::6]:9002");
        // A path stays: orcd judges it.
        let with_path = stand_in(&worker("http://10.0.0.2:9001/refused", 9001), 9002).unwrap();
        assert_eq!(with_path.advertise_url, "http://10.0.0.2:9002/refused");
    }
}

//! Ports on this machine.

use std::net::{IpAddr, SocketAddr, TcpListener};

use anyhow::Context as _;

/// A port nobody listens on right now. The worker binds it a moment later; choosing it here
/// means the worker id, URL and state file are known before the worker starts.
pub fn free_port(bind: IpAddr) -> anyhow::Result<u16> {
    let listener = TcpListener::bind(SocketAddr::new(bind, 0))
        .with_context(|| format!("finding a free port on {bind}\nhint: is {bind} an address of this machine? pass --bind"))?;
    Ok(listener.local_addr()?.port())
}

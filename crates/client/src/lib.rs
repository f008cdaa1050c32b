//! The one client of orcd, shared by every `cargo xtask` command, the bench and the
//! end-to-end tests, so that tokens, the proxy rule, timeouts and the hints of an error are
//! decided in one place:
//! - [`http`]: how any HTTP client of the project's daemons is built (loopback never through a
//!   proxy, connect timeout, bearer token);
//! - [`OrcdClient`]: orcd's native API, async; [`blocking::OrcdClient`] for scripted code;
//! - [`wait`]: the wait for a daemon's `/health` and the type of a timed-out wait for live
//!   workers ([`OrcdClient::wait_until_live`]).

pub mod blocking;
pub mod http;
mod orcd;
pub mod wait;

pub use orcd::{url_segment, JobOutcome, OrcdClient, OrcdRefusal, TaskStream, REQUEST_TIMEOUT};

//! orcd's own request checks, beyond the shared ones in [`llorch_api::validation`] (which every
//! task goes through, on `/v2` and `/v1` alike): a raw [`WorkerRegistration`] is checked before
//! it enters the registry, and the OpenAI translation names what it cannot take. [`log_safe`]
//! defuses client text before it reaches a log. Nothing unvalidated reaches the scheduler or a
//! worker.

pub use llorch_api::log_safe::log_safe;
use llorch_api::validation::validate_model_id;
pub use llorch_api::validation::{
    check_json_depth, validate_job_id, validate_task, validate_worker_id, PromptInput,
    RequestError, RequestLimits, ValidTask, MAX_JSON_DEPTH,
};
use llorch_api::WorkerRegistration;

pub const MAX_WORKER_SLOTS: u32 = 1024;

/// Why orcd refused a request: the shared request checks, plus orcd's own.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("`url` must be http://host:port or https://host:port, got `{url}`")]
    WorkerUrl { url: String },
    #[error("`url` {url} is a loopback address, but the worker registered from {peer}: orcd would reach itself there, not the worker\nhint: start the worker with `--advertise-url http://ADDRESS:PORT` naming an address of its host that orcd can reach (`cargo xtask pool worker spawn --host H` advertises the host profile's address; override it with `--advertise-host ADDRESS`)")]
    LoopbackFromRemote { url: String, peer: std::net::IpAddr },
    #[error("`slots` must be between 1 and {limit}, got {value}")]
    Slots { value: u32, limit: u32 },
    #[error("`ctx_size` must be at least 1")]
    CtxSize,
    #[error("`seed` must be between 0 and {}, got {value}", u32::MAX)]
    Seed { value: i64 },
    #[error("`n` must be between 1 and 4 (each choice takes a slot of its own), got {value}")]
    ChoiceCount { value: u64 },
    #[error(
        "`response_format.json_schema.schema` uses `{feature}` at `{at}`, which structured \
         output cannot enforce; remove it or describe the constraint in the prompt"
    )]
    SchemaFeature { feature: String, at: String },
    #[error("`{field}` must be at most {limit}, got {value}")]
    AboveMaximum {
        field: &'static str,
        value: f32,
        limit: f32,
    },
    #[error("`prompt` must be one string (or a list holding one string), got {count} prompts")]
    PromptCount { count: usize },
    #[error("`{field}` must be {expected}")]
    WrongType {
        field: String,
        expected: &'static str,
    },
    #[error("`{field}` is not supported by orcd{detail}")]
    Unsupported { field: String, detail: &'static str },
    /// A body field serde could not read (wrong type, missing, unknown variant).
    #[error("`{field}`: {problem}")]
    Field { field: String, problem: String },
    #[error(transparent)]
    EmbeddingInput(#[from] llorch_api::embeddings::EmbeddingInputError),
    #[error("`model` `{model}` is served only by workers without embeddings\nhint: start one with `cargo xtask pool worker spawn cpu --model {model} -- --embeddings` (or `llorch-worker --embeddings`)")]
    NoEmbeddings { model: String },
}

/// Checks a registration and returns it with the url's trailing slash removed, so that
/// `{url}/execute` never has a double slash.
pub fn validate_registration(
    mut registration: WorkerRegistration,
) -> Result<WorkerRegistration, ValidationError> {
    validate_worker_id(&registration.worker_id)?;
    validate_model_id("model", &registration.model)?;
    registration.url = validate_worker_url(&registration.url)?;
    if !(1..=MAX_WORKER_SLOTS).contains(&registration.slots) {
        return Err(ValidationError::Slots {
            value: registration.slots,
            limit: MAX_WORKER_SLOTS,
        });
    }
    if registration.ctx_size == 0 {
        return Err(ValidationError::CtxSize);
    }
    Ok(registration)
}

/// A worker on another machine cannot be reached at a loopback URL: orcd would connect to
/// itself. Refused at registration, so the operator learns it then and not from the first
/// job failing with "connection refused". `peer` is the registration's source address.
pub fn check_advertised_url(
    url: &str,
    peer: Option<std::net::IpAddr>,
) -> Result<(), ValidationError> {
    let Some(peer) = peer.map(|peer| peer.to_canonical()) else {
        return Ok(());
    };
    if peer.is_loopback() {
        return Ok(());
    }
    let loopback = reqwest::Url::parse(url).ok().is_some_and(|url| {
        let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.to_canonical().is_loopback() || ip.is_unspecified(),
            Err(_) => {
                let host = host.to_ascii_lowercase();
                host == "localhost" || host.ends_with(".localhost")
            }
        }
    });
    if loopback {
        return Err(ValidationError::LoopbackFromRemote {
            url: url.to_owned(),
            peer,
        });
    }
    Ok(())
}

/// Accepts `http(s)://host:port` with an explicit port and nothing after it but an optional `/`.
fn validate_worker_url(raw: &str) -> Result<String, ValidationError> {
    let invalid = || ValidationError::WorkerUrl {
        url: raw.to_owned(),
    };
    let url = reqwest::Url::parse(raw).map_err(|_| invalid())?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some_and(|host| !host.is_empty())
        && url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none();
    // `Url::port` hides a port equal to the scheme's default, so look at the text itself.
    let authority = raw
        .split_once("://")
        .map_or("", |(_, rest)| rest)
        .trim_end_matches('/');
    let explicit_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    if !plain || !explicit_port {
        return Err(invalid());
    }
    Ok(raw.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use llorch_api::Backend;

    fn registration(url: &str) -> WorkerRegistration {
        WorkerRegistration {
            worker_id: "w-1".into(),
            url: url.into(),
            model: "gemma3-270m".into(),
            backend: Backend::Cpu,
            slots: 4,
            ctx_size: 4096,
            embeddings: false,
        }
    }

    #[test]
    fn registration_url_must_be_scheme_host_port() {
        for good in [
            "http://127.0.0.1:9001",
            "https://gpu-box:443/",
            "http://[::1]:80",
        ] {
            let checked = validate_registration(registration(good)).unwrap();
            assert!(!checked.url.ends_with('/'), "{}", checked.url);
        }
        for bad in [
            "127.0.0.1:9001",
            "ftp://host:21",
            "http://host",
            "http://host:9001/v1",
            "http://user@host:9001",
            "http://host:9001?x=1",
            "http://[::1]",
        ] {
            assert_eq!(
                validate_registration(registration(bad)),
                Err(ValidationError::WorkerUrl { url: bad.into() }),
                "{bad}"
            );
        }
    }

    #[test]
    fn registration_checks_id_slots_and_context() {
        let mut bad_id = registration("http://h:1");
        bad_id.worker_id = "w/1".into();
        assert_eq!(
            validate_registration(bad_id),
            Err(ValidationError::Request(RequestError::IdCharacter {
                field: "worker_id",
                character: '/',
                allowed: "ASCII letters, digits, `.`, `_` and `-`",
            }))
        );
        let mut no_slots = registration("http://h:1");
        no_slots.slots = 0;
        assert_eq!(
            validate_registration(no_slots),
            Err(ValidationError::Slots {
                value: 0,
                limit: MAX_WORKER_SLOTS
            })
        );
        let mut no_ctx = registration("http://h:1");
        no_ctx.ctx_size = 0;
        assert_eq!(validate_registration(no_ctx), Err(ValidationError::CtxSize));
    }
}

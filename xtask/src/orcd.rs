//! How xtask reaches orcd: the one client ([`llorch_client`]) with the token, the URL and the
//! hints that this user's settings give (flags > `LLORCH_*` > config file > defaults).

use llorch_client::blocking::OrcdClient;

use crate::Context;

/// A client of the orcd at `base_url` with the client token the settings name; a refused
/// token's hint says where the token came from, an unreachable orcd's how to start or name one.
pub fn client(cx: &Context, base_url: &str) -> anyhow::Result<OrcdClient> {
    let token = api_token(cx)?;
    let inner = llorch_client::OrcdClient::new(base_url, token.as_deref())
        .with_token_hint(token_source(&cx.settings))
        .with_unreachable_hint(
            "start the stack with `cargo xtask up`, or pass --orchestrator-url / set LLORCH_ORCHESTRATOR_URL",
        );
    Ok(OrcdClient::new(inner))
}

/// A client of the orcd the settings name (`LLORCH_ORCHESTRATOR_URL`, `orchestrator.url`).
pub fn default_client(cx: &Context) -> anyhow::Result<OrcdClient> {
    client(cx, &cx.settings.orchestrator_url)
}

/// The client token for orcd from `LLORCH_API_TOKEN_FILE` / `[orchestrator] api_token_file`
/// (the file's first token), or none when orcd runs without tokens. A line of orcd's own client
/// token file works too: the key's settings after the token are not sent.
pub fn api_token(cx: &Context) -> anyhow::Result<Option<String>> {
    let Some(path) = &cx.settings.api_token_file else {
        return Ok(None);
    };
    let tokens = llorch_api::secret::read_token_file(path, "API token")
        .map_err(|error| anyhow::anyhow!("reading the API token for orcd: {error}"))?;
    Ok(tokens
        .into_iter()
        .next()
        .and_then(|line| line.split_whitespace().next().map(str::to_owned)))
}

/// Where this client's token comes from, for the hint of a 401: the file and the setting that
/// named it, or how to give one.
fn token_source(settings: &crate::config::Settings) -> String {
    let origin = settings.origins.get("api_token_file").copied();
    match (&settings.api_token_file, origin) {
        (Some(path), Some(crate::config::Origin::Env)) => format!(
            "the client read its token from {} (LLORCH_API_TOKEN_FILE); it must hold a token of orcd's --api-token-file",
            path.display()
        ),
        (Some(path), _) => format!(
            "the client read its token from {} (`orchestrator.api_token_file` in {}); it must hold a token of orcd's --api-token-file",
            path.display(),
            settings.config_path.display()
        ),
        (None, _) => "the client sent no token: export LLORCH_API_TOKEN_FILE=FILE, or run `cargo xtask config set orchestrator.api_token_file FILE`".to_owned(),
    }
}

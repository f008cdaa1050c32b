//! The model catalog (`catalog.toml`) and the on-disk layout of downloaded models, shared by
//! xtask (which downloads and verifies) and the worker (which resolves `--model CATALOG_ID`).

use std::path::PathBuf;

/// Where models live when neither a flag, `LLORCH_MODEL_BASE_DIR` nor the config file says:
/// the XDG data directory (`~/.local/share/llorch/models`), outside any checkout, so every
/// clone, test run and CI run on a machine shares one download.
pub fn default_model_base_dir() -> PathBuf {
    use etcetera::BaseStrategy;
    match etcetera::choose_base_strategy() {
        Ok(strategy) => strategy.data_dir().join("llorch").join("models"),
        Err(_) => PathBuf::from(".llorch-models"),
    }
}

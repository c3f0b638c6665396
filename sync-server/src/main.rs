//! `sync-server`: parse the configuration, set up logging, serve.

use sync_server::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = match Config::load() {
        Ok(config) => config,
        // `--help` and `--version`, and a mistyped flag: clap prints them the usual way and
        // exits 0 or 2, instead of an `Error:` and exit code 1.
        Err(e) => match e.downcast::<clap::Error>() {
            Ok(usage) => usage.exit(),
            Err(e) => return Err(e),
        },
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log_json {
        logs.json().init();
    } else {
        logs.init();
    }
    sync_server::serve(config, sync_server::shutdown_signal()).await
}

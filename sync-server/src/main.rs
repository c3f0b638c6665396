//! `sync-server`: parse the configuration, set up logging, serve.

use sync_server::config::Config;

/// mimalloc rather than glibc's malloc: a pull page allocates and frees a few strings per
/// object, and in a profile of 100,000-object pulls glibc's `malloc`/`free` took a fifth of
/// the server's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::load()?;
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

use anyhow::Context;
use clap::Parser;

// The services' allocator (see the workspace manifest), so that the comparison is between architectures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = bench::baseline::Config::parse();
    telemetry::logging::init("info").map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    bench::baseline::run(listener, config, public_api::shutdown_signal()).await
}

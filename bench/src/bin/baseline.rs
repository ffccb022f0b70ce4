use anyhow::Context;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = bench::baseline::Config::parse();
    telemetry::logging::init("info").map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    bench::baseline::run(listener, config, public_api::shutdown_signal()).await
}

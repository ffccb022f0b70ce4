use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::logging::init("info,lapin=warn,zookeeper_client=warn")
        .map_err(anyhow::Error::msg)?;
    let config = worker::Config::parse();
    let id = config.id.clone();
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    let res = worker::run(config, shutdown).await;
    if let Err(e) = &res {
        tracing::error!(worker = %id, "stopping: {e:#}");
    }
    res
}

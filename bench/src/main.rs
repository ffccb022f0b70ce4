use clap::Parser;

fn main() -> anyhow::Result<()> {
    let config = bench::Config::parse();
    // The workers inherit this environment: unless told otherwise, keep their logs and the in-process
    // orchestrator's to warnings, so they do not bury the table. Set before any thread starts.
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "warn");
    }
    telemetry::logging::init("warn").map_err(anyhow::Error::msg)?;
    tokio::runtime::Runtime::new()?.block_on(bench::run(config))
}

//! `altinn-sync altinn-sim`: its flags, as the CLI will parse them, and its start-up errors.

use altinn_sync::sim::{self, Faults, SimArgs};
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// Mirrors how `src/cli.rs` nests the subcommand.
#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    AltinnSim(SimArgs),
}

fn parse(args: &[&str]) -> SimArgs {
    let argv = ["altinn-sync", "altinn-sim"].iter().chain(args);
    let Command::AltinnSim(args) = Cli::try_parse_from(argv).unwrap().command;
    args
}

#[test]
fn fault_flags_become_faults() {
    let args = parse(&[
        "--listen",
        "127.0.0.1:9999",
        "--server-error-share",
        "0.3",
        "--latency-ms",
        "50",
    ]);

    assert_eq!(args.listen.port(), 9999);
    assert_eq!(
        args.faults(),
        Faults {
            server_error_share: 0.3,
            latency_ms: 50,
            retry_after_secs: 1,
            hang_ms: 30_000,
            ..Faults::default()
        }
    );
}

#[tokio::test]
async fn a_broken_world_file_stops_the_start() {
    let path = std::env::temp_dir().join(format!("altinn-sim-world-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&path, b"{\"firms\": 1}").unwrap();
    let args = parse(&["--listen", "127.0.0.1:0", "--world", path.to_str().unwrap()]);

    let result = sim::run(&args, CancellationToken::new()).await;
    std::fs::remove_file(&path).unwrap();

    assert!(
        matches!(result, Err(sim::Error::ParseWorld { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_good_world_file_is_served_until_cancelled() {
    let path = std::env::temp_dir().join(format!("altinn-sim-world-{}.json", uuid::Uuid::new_v4()));
    let world = crate::helpers::world(
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
    );
    std::fs::write(&path, serde_json::to_vec(&world).unwrap()).unwrap();
    let args = parse(&["--listen", "127.0.0.1:0", "--world", path.to_str().unwrap()]);
    let shutdown = CancellationToken::new();
    shutdown.cancel();

    let result = sim::run(&args, shutdown).await;
    std::fs::remove_file(&path).unwrap();

    assert!(result.is_ok(), "{result:?}");
}

//! The admin router as the worker builds it, without PostgreSQL, for `admin_api`: a request
//! that passes every check of its input gets 503 from the missing pool, so the target reaches
//! all of the input parsing (private functions included) and nothing beyond it.

use std::sync::{Arc, OnceLock};

use altinn_sync::admin::{self, Health, Tokens, api::Api};
use altinn_sync::worker::WorkerSettings;
use axum::Router;
use clap::Parser;

/// The one firm the scoped token may act for.
pub const FIRM: &str = "912345610";

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    worker: WorkerSettings,
}

pub struct World {
    pub runtime: tokio::runtime::Runtime,
    pub router: Router,
    /// A token for every firm, and one for [`FIRM`] only.
    pub all_token: String,
    pub firm_token: String,
}

pub fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let all = admin::tokens::generate("ops", "*").expect("token for all firms");
        let firm = admin::tokens::generate("settings-page", FIRM).expect("token for one firm");
        let tokens = Tokens::parse(&format!("{}\n{}\n", all.line, firm.line)).expect("tokens");
        // The defaults, as `run` has them without flags or environment.
        let settings = Args::try_parse_from(["altinn-sync"])
            .expect("default settings")
            .worker;
        let health = Arc::new(Health::default());
        let api = Api::new(
            health.clone(),
            tokens,
            settings.mode(),
            &settings.broker,
            &settings.ingest,
            &settings.admin.api,
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        World {
            runtime,
            router: admin::router(health, Some(api)),
            all_token: all.token,
            firm_token: firm.token,
        }
    })
}

/// Percent-encodes everything but letters, digits, `-` and `_`, so any bytes make a valid
/// path segment or query value that axum decodes back to the same bytes.
pub fn percent_encode(raw: &[u8]) -> String {
    raw.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

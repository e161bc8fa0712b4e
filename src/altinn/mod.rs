//! The Altinn 3 client-delegation client, acting as each firm's system user.
//!
//! - [`config`]: the settings, all optional so the worker can run without Altinn.
//! - [`maskinporten`]: the signed JWT grant, the token exchange and the per-firm token cache.
//! - [`client`]: the v1 enduser `clientdelegations` calls and `authorizedparties`.
//! - [`http`]: every call's client span, `traceparent` and request metrics.
//! - [`pace`]: how many calls go out at once, found adaptively or fixed.
//! - [`paths`]: every route, with the label spans and metrics give it.
//! - [`wire`]: the JSON bodies, named as in Altinn's OpenAPI document.
//! - [`error`]: every answer classified into what the caller should do with it.

pub mod client;
pub mod config;
pub mod error;
pub mod http;
pub mod maskinporten;
pub mod pace;
pub mod paths;
pub mod wire;

pub use client::{AltinnClient, Change, Firm};
pub use config::{AltinnSettings, ValidatedAltinnConfig};
pub use error::{Class, Error, Rejection, Result};
pub use pace::{CallLimit, Concurrency};
pub use paths::ENDPOINTS;

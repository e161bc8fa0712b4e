//! The Altinn client against the in-process simulator, and both against Altinn's OpenAPI spec.

mod conformance;
mod errors;
mod flow;
mod grant;
mod helpers;
mod sim_process;

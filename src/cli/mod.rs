//! The command line: its arguments and running one command ([`execute`]).

mod args;
mod execute;
mod secrets;

pub use args::{
    AuditArgs, Cli, Command, DecideArgs, OpsArgs, PublishArgs, ReconcileArgs, SyncArgs,
};
pub use execute::execute;
pub use secrets::Secrets;

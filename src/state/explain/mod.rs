//! "Why is my Altinn access missing?": everything the desired state knows about one employee,
//! so support staff can answer from the system itself.
//!
//! `facts` reads what the store knows of the firm and the employee, `package` tells where each
//! package stands, `verdict` draws the one-line answer, and `render` prints it for a terminal.

mod explanation;
mod facts;
mod package;
mod render;
mod verdict;

pub use explanation::{Explanation, explain};
pub use facts::ClientFacts;
pub use package::{ExplainMode, PackageFacts, PackageState};

// `sqlx::migrate!` embeds schemas/migrations at compile time; without this a new migration is
// left out of an incremental build (sqlx's `migrate build-script`).
fn main() {
    println!("cargo:rerun-if-changed=schemas/migrations");
}

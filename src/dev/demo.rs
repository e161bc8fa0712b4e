//! The demo dev starts with: the simulator's world, its Maskinporten client, and the events
//! the guide has the user publish.

/// The demo world and the published, test-only key its Maskinporten client trusts.
pub(super) const DEMO_WORLD: &str = include_str!("../../deploy/sim/demo-world.json");
pub(super) const DEMO_KEY: &str = include_str!("../../deploy/sim/test-only-maskinporten-key.pem");
/// The world's Maskinporten client (see `deploy/sim/README.md`).
pub(super) const CLIENT_ID: &str = "demo-client";
pub(super) const KID: &str = "demo-kid";
pub(super) const SCOPES: &str = "altinn:accessmanagement/authorizedparties \
                      altinn:clientdelegations.read altinn:clientdelegations.write";
/// The demo firm, and the events the guide tells the user to publish, to notice when this
/// database has seen them already (they would then be duplicates and change nothing).
pub(super) const DEMO_FIRM: &str = "912345610";
pub(super) const DEMO_EVENTS: [&str; 5] = [
    include_str!("../../schemas/examples/demo/01-kari-role-changed.json"),
    include_str!("../../schemas/examples/demo/02-kari-client-assigned.json"),
    include_str!("../../schemas/examples/demo/03-ola-role-changed.json"),
    include_str!("../../schemas/examples/demo/04-project-accountant-to-ola.json"),
    include_str!("../../schemas/examples/demo/05-kari-client-removed.json"),
];

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::sim::World;

    #[test]
    fn the_embedded_demo_world_and_events_parse() {
        let world: World = serde_json::from_str(DEMO_WORLD).unwrap();
        assert!(world.firms.iter().any(|f| f.org_number == DEMO_FIRM));
        for text in DEMO_EVENTS {
            let event: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(event["firm"]["org_number"], DEMO_FIRM);
            assert!(Uuid::parse_str(event["event_id"].as_str().unwrap()).is_ok());
        }
    }
}

//! Which handler answers which path, and the middleware in front of them.

use axum::Router;
use axum::routing::{get, post, put};

use super::simulator::Simulator;
use super::{admin, delegations, middleware, tokens};

impl Simulator {
    pub fn router(&self) -> Router {
        const CD: &str = "/accessmanagement/api/v1/enduser/clientdelegations";
        let altinn = Router::new()
            .route("/token", post(tokens::maskinporten_token))
            .route(
                "/authentication/api/v1/exchange/{provider}",
                get(tokens::exchange),
            )
            .route(
                "/accessmanagement/api/v1/enduser/authorizedparties",
                get(delegations::authorized_parties),
            )
            .route(&format!("{CD}/clients"), get(delegations::clients))
            .route(
                &format!("{CD}/agents"),
                get(delegations::agents)
                    .post(delegations::add_agent)
                    .delete(delegations::remove_agent),
            )
            .route(
                &format!("{CD}/agents/accesspackages"),
                get(delegations::agent_packages)
                    .post(delegations::delegate)
                    .delete(delegations::revoke),
            )
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                middleware::record,
            ))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                middleware::inject,
            ));
        let admin = Router::new()
            .route("/_sim/world", put(admin::put_world))
            .route("/_sim/delegations", get(admin::get_delegations))
            .route("/_sim/faults", put(admin::put_faults))
            .route("/_sim/tokens/revoke", post(admin::revoke_tokens));
        altinn.merge(admin).with_state(self.clone())
    }
}

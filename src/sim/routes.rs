//! Which handler answers which path, and the middleware in front of them.

use axum::Router;
use axum::routing::{get, post, put};

use super::simulator::Simulator;
use super::{admin, delegations, middleware, tokens};

impl Simulator {
    pub fn router(&self) -> Router {
        const CD: &str = "/accessmanagement/api/v1/enduser/clientdelegations";
        let tokens = Router::new()
            .route("/token", post(tokens::maskinporten_token))
            .route(
                "/authentication/api/v1/exchange/{provider}",
                get(tokens::exchange),
            );
        let access_management = Router::new()
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
            );
        // Outermost, so a request over the limit is turned away before any latency or fault.
        let access_management =
            self.with_faults(access_management)
                .layer(axum::middleware::from_fn_with_state(
                    self.clone(),
                    middleware::limit,
                ));
        let admin = Router::new()
            .route("/_sim/world", put(admin::put_world))
            .route("/_sim/delegations", get(admin::get_delegations))
            .route("/_sim/faults", put(admin::put_faults))
            .route(
                "/_sim/capacity",
                get(admin::get_capacity).put(admin::put_capacity),
            )
            .route("/_sim/tokens/revoke", post(admin::revoke_tokens));
        self.with_faults(tokens)
            .merge(access_management)
            .merge(admin)
            .with_state(self.clone())
    }

    /// The injected faults (outer) and the journal (inner, so it sees what the routes answered).
    fn with_faults(&self, routes: Router<Simulator>) -> Router<Simulator> {
        routes
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                middleware::record,
            ))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                middleware::inject,
            ))
    }
}

//! Every Altinn and Maskinporten route the client calls, as spans and metrics name it.
//!
//! The client, the token source and the HTTP layer all read them here, so none imports the
//! others for a constant.

pub const AUTHORIZED_PARTIES_PATH: &str = "/accessmanagement/api/v1/enduser/authorizedparties";
pub const CLIENTS_PATH: &str = "/accessmanagement/api/v1/enduser/clientdelegations/clients";
pub const AGENTS_PATH: &str = "/accessmanagement/api/v1/enduser/clientdelegations/agents";
pub const AGENT_PACKAGES_PATH: &str =
    "/accessmanagement/api/v1/enduser/clientdelegations/agents/accesspackages";
pub const EXCHANGE_PATH: &str = "/authentication/api/v1/exchange/maskinporten";

/// One route, as spans and metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The `endpoint` label.
    pub label: &'static str,
    pub method: &'static str,
    /// The path template (`url.template`): query parameters carry the ids.
    pub route: &'static str,
}

impl Endpoint {
    pub fn http_method(&self) -> reqwest::Method {
        match self.method {
            "POST" => reqwest::Method::POST,
            "DELETE" => reqwest::Method::DELETE,
            _ => reqwest::Method::GET,
        }
    }
}

/// `POST {MASKINPORTEN_URL}token`.
pub const MASKINPORTEN_TOKEN: Endpoint = Endpoint {
    label: "maskinporten_token",
    method: "POST",
    route: "/token",
};
pub const TOKEN_EXCHANGE: Endpoint = Endpoint {
    label: "token_exchange",
    method: "GET",
    route: EXCHANGE_PATH,
};
pub const AUTHORIZED_PARTIES: Endpoint = Endpoint {
    label: "authorizedparties",
    method: "GET",
    route: AUTHORIZED_PARTIES_PATH,
};
pub const CLIENTS: Endpoint = Endpoint {
    label: "clients",
    method: "GET",
    route: CLIENTS_PATH,
};
pub const AGENTS: Endpoint = Endpoint {
    label: "agents",
    method: "GET",
    route: AGENTS_PATH,
};
pub const AGENTS_POST: Endpoint = Endpoint {
    label: "agents_post",
    method: "POST",
    route: AGENTS_PATH,
};
pub const AGENTS_DELETE: Endpoint = Endpoint {
    label: "agents_delete",
    method: "DELETE",
    route: AGENTS_PATH,
};
pub const DELEGATIONS: Endpoint = Endpoint {
    label: "delegations",
    method: "GET",
    route: AGENT_PACKAGES_PATH,
};
pub const DELEGATIONS_POST: Endpoint = Endpoint {
    label: "delegations_post",
    method: "POST",
    route: AGENT_PACKAGES_PATH,
};
pub const DELEGATIONS_DELETE: Endpoint = Endpoint {
    label: "delegations_delete",
    method: "DELETE",
    route: AGENT_PACKAGES_PATH,
};

/// Every value of the `endpoint` label, so the metrics can be exported at 0 from the start.
pub const ENDPOINTS: &[&str] = &[
    MASKINPORTEN_TOKEN.label,
    TOKEN_EXCHANGE.label,
    AUTHORIZED_PARTIES.label,
    CLIENTS.label,
    AGENTS.label,
    AGENTS_POST.label,
    AGENTS_DELETE.label,
    DELEGATIONS.label,
    DELEGATIONS_POST.label,
    DELEGATIONS_DELETE.label,
];

#[cfg(test)]
mod tests {
    use super::ENDPOINTS;

    #[test]
    fn endpoint_labels_are_distinct_route_names() {
        let mut labels = ENDPOINTS.to_vec();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), ENDPOINTS.len());
        assert!(
            ENDPOINTS
                .iter()
                .all(|l| l.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        );
    }
}

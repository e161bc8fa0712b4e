//! The OpenAPI document, generated from the handlers and committed as
//! `schemas/admin-api.openapi.json`. The error answers every `/v1` operation can give are added
//! here once, so no route can forget one.

use serde_json::json;
use utoipa::OpenApi;
use utoipa::openapi::RefOr;
use utoipa::openapi::path::{Operation, Parameter, ParameterIn};

use super::changes::{self, SelectionBody};
use super::reads;
use crate::admin::problem::Problem;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "altinn-sync admin API",
        description = "What AdminFlow's settings page and support call: a firm's status, one \
                       sync's outcome, why an employee's access is missing, dry runs, parked and \
                       staged changes, and the audit. Every /v1 route needs a bearer token from \
                       ADMIN_TOKENS_FILE. Every error is application/problem+json (RFC 9457), \
                       checked in this order: 401, 400, 403, 404."
    ),
    paths(reads::status, reads::sync_summary, reads::explain, reads::plan, changes::sync,
          reads::parked, changes::retry, reads::staged, changes::approve, changes::reject,
          reads::audit),
    components(schemas(Problem, SelectionBody)),
    modifiers(&BearerAuth, &OrgParameter, &ErrorAnswers, &OptionalBodies),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every `{org}`, which utoipa infers from the routes as a bare string: one definition in the
/// components, referred to by every operation.
struct OrgParameter;

impl utoipa::Modify for OrgParameter {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let org = json!({
            "name": "org", "in": "path", "required": true,
            "description": "The firm's organisation number: nine digits, the last of them the \
                            MOD11 check digit of the first eight (as Brønnøysundregistrene \
                            gives them). A number that fails the check is a 400 too.",
            "schema": {"type": "string", "pattern": "^[0-9]{9}$",
                       "format": "organisation-number"},
            "example": "912345610"
        });
        let (Ok(org), Ok(reference)) = (
            serde_json::from_value(org),
            serde_json::from_value::<RefOr<Parameter>>(
                json!({"$ref": "#/components/parameters/Org"}),
            ),
        ) else {
            return;
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.parameters.insert("Org".to_owned(), org);
        for operation in operations(openapi) {
            for parameter in operation.parameters.iter_mut().flatten() {
                if let RefOr::T(p) = parameter
                    && p.name == "org"
                    && p.parameter_in == ParameterIn::Path
                {
                    *parameter = reference.clone();
                }
            }
        }
    }
}

/// Every error status an operation can answer, each `application/problem+json`.
const ERRORS: [(&str, &str, &str); 8] = [
    (
        "400",
        "BadRequest",
        "A malformed organisation number (nine digits with a MOD11 check digit), id, body or \
         query parameter",
    ),
    ("401", "Unauthorized", "No valid bearer token"),
    (
        "403",
        "Forbidden",
        "The token may not act for this firm, or it is read-only and the route changes something",
    ),
    (
        "404",
        "NotFound",
        "The firm has never been named by an event (or, for a sync, there is no such sync)",
    ),
    (
        "408",
        "RequestTimeout",
        "The request was not completed within 15 s",
    ),
    ("413", "PayloadTooLarge", "The body is larger than 16 KiB"),
    (
        "429",
        "TooManyRequests",
        "The token has too many calls in progress (ADMIN_CALLS_PER_TOKEN), or has requested \
         syncs faster than ADMIN_SYNCS_PER_MINUTE; wait Retry-After seconds",
    ),
    (
        "503",
        "ServiceUnavailable",
        "PostgreSQL or RabbitMQ is unavailable, the worker is still connecting, every database \
         connection of the API is busy, or a query ran longer than ADMIN_STATEMENT_TIMEOUT_MS",
    ),
];

struct ErrorAnswers;

impl utoipa::Modify for ErrorAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (status, name, description) in ERRORS {
            let mut response = json!({
                "description": description,
                "content": {"application/problem+json": {
                    "schema": {"$ref": "#/components/schemas/Problem"}}}
            });
            if status == "429" {
                response["headers"] = json!({"Retry-After": {
                    "description": "Seconds to wait", "schema": {"type": "integer"}}});
            }
            if status == "401" {
                response["headers"] = json!({"WWW-Authenticate": {
                    "description": "`Bearer`", "schema": {"type": "string"}}});
            }
            if let Ok(response) = serde_json::from_value(response) {
                components.responses.insert(name.to_owned(), response);
            }
        }
        for operation in operations(openapi) {
            for (status, name, _) in ERRORS {
                let reference = json!({"$ref": format!("#/components/responses/{name}")});
                if let Ok(reference) = serde_json::from_value(reference) {
                    operation
                        .responses
                        .responses
                        .insert(status.to_owned(), reference);
                }
            }
        }
    }
}

/// utoipa writes an `Option<T>` body as `oneOf: [T, null]`; the API takes no body or a `T`,
/// never `null`, so such a body becomes `T`, not required.
struct OptionalBodies;

impl utoipa::Modify for OptionalBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for operation in operations(openapi) {
            let Some(RefOr::T(body)) = operation.request_body.as_mut() else {
                continue;
            };
            for content in body.content.values_mut() {
                let Ok(mut value) = serde_json::to_value(&*content) else {
                    continue;
                };
                let Some(one_of) = value["schema"]["oneOf"].as_array() else {
                    continue;
                };
                let kept: Vec<_> = one_of
                    .iter()
                    .filter(|s| s["type"] != "null")
                    .cloned()
                    .collect();
                if let ([only], true) = (&kept[..], one_of.len() == 2) {
                    value["schema"] = only.clone();
                    if let Ok(rewritten) = serde_json::from_value(value) {
                        *content = rewritten;
                    }
                }
            }
        }
    }
}

fn operations(openapi: &mut utoipa::openapi::OpenApi) -> impl Iterator<Item = &mut Operation> {
    openapi
        .paths
        .paths
        .values_mut()
        .flat_map(|item| [item.get.as_mut(), item.post.as_mut()])
        .flatten()
}

/// The OpenAPI document, as committed in `schemas/admin-api.openapi.json`.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

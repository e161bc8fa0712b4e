//! JSON bodies of the v1 enduser client-delegation API, Maskinporten and the problem format.
//!
//! Field names follow Altinn's published OpenAPI document
//! (`altinn-platform-accessmanagement-v1-enduser.json`) exactly, including the trailing space in
//! `"legacyurn "`. Reading is lenient: unknown fields are ignored and `null` counts as absent,
//! because Altinn's DTOs grow and its examples carry fields the code no longer sends. Writing
//! leaves absent optional fields out, so the simulator's answers validate against the spec.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

/// `null` and a missing field both become the type's default (Altinn sends `null` lists).
fn null_as_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

/// The list wrapper. Altinn always answers with one page and `next = null`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
pub struct Paginated<T> {
    pub links: PageLinks,
    #[serde(deserialize_with = "null_as_default")]
    pub data: Vec<T>,
}

impl<T> Paginated<T> {
    pub fn single_page(data: Vec<T>) -> Self {
        Self {
            links: PageLinks { next: None },
            data,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PageLinks {
    pub next: Option<String>,
}

/// One entry of `GET authorizedparties`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizedParty {
    pub party_uuid: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_number: Option<String>,
    /// `None`, `Person`, `Organization` or `SelfIdentified`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub party_type: Option<String>,
    #[serde(default)]
    pub is_deleted: bool,
}

/// `CompactEntityDto`: a client, an agent or a provider. `Debug` leaves out the person
/// identifier, which may be a national identity number.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompactEntity {
    pub id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub entity_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_identifier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person_identifier: Option<String>,
    #[serde(default)]
    pub is_deleted: bool,
}

impl fmt::Debug for CompactEntity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompactEntity")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("entity_type", &self.entity_type)
            .field("variant", &self.variant)
            .field("organization_identifier", &self.organization_identifier)
            .field(
                "person_identifier",
                &self.person_identifier.as_ref().map(|_| "<redacted>"),
            )
            .field("is_deleted", &self.is_deleted)
            .finish()
    }
}

/// `CompactRoleDto`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompactRole {
    pub id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urn: Option<String>,
    // The trailing space is in Altinn's contract, not a typo of ours.
    #[serde(
        rename = "legacyurn ",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub legacy_urn: Option<String>,
}

/// `CompactPackageDto`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompactPackage {
    pub id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area_id: Option<Uuid>,
}

/// `RoleAccessPackages`: the packages that one role carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleAccess {
    pub role: CompactRole,
    #[serde(default, deserialize_with = "null_as_default")]
    pub packages: Vec<CompactPackage>,
}

/// `ClientDto`: from `GET clients` (delegable packages) and `GET agents/accesspackages`
/// (packages the agent holds for this client).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientAccess {
    pub client: CompactEntity,
    #[serde(default, deserialize_with = "null_as_default")]
    pub access: Vec<RoleAccess>,
}

/// `AgentDto`: from `GET agents`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentAccess {
    pub agent: CompactEntity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_added_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub access: Vec<RoleAccess>,
}

/// `PersonInput`, the body of `POST agents`. Debug hides the national identity number.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersonInput {
    pub person_identifier: String,
    pub last_name: String,
}

impl fmt::Debug for PersonInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersonInput")
            .field("person_identifier", &"<redacted>")
            .field("last_name", &self.last_name)
            .finish()
    }
}

/// `AssignmentDto`, the answer to `POST agents`; `to_id` is the agent's party UUID.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    pub id: Uuid,
    pub role_id: Uuid,
    pub from_id: Uuid,
    pub to_id: Uuid,
}

/// `DelegationBatchInputDto`, the body of `POST`/`DELETE agents/accesspackages`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegationBatch {
    #[serde(default, deserialize_with = "null_as_default")]
    pub values: Vec<Permission>,
}

impl DelegationBatch {
    /// One role with its packages, the shape the dispatcher sends per (client, employee).
    pub fn for_role(role: &str, packages: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let packages = packages.into_iter().map(Into::into).collect();
        Self {
            values: vec![Permission {
                role: role.to_owned(),
                packages,
            }],
        }
    }
}

/// `Permission`: `role` is a code (`regnskapsforer`), URN or UUID; packages are URNs or suffixes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub role: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub packages: Vec<String>,
}

/// `DelegationDto`: one package's result; `changed = false` when it already was so.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delegation {
    pub role_id: Uuid,
    pub package_id: Uuid,
    pub via_id: Uuid,
    pub from_id: Uuid,
    pub to_id: Uuid,
    pub changed: bool,
}

/// `AltinnProblemDetails` and its validation variant (RFC 7807 plus Altinn's extras).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProblemDetails {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub problem_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_description: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub validation_errors: Vec<ValidationError>,
}

/// `AltinnValidationError`: `paths` are JSON pointers such as `/values[0]/packages[1]` or
/// `$QUERY/from`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationError {
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Maskinporten's answer to a JWT grant.
#[derive(Clone, Serialize, Deserialize)]
pub struct MaskinportenToken {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl fmt::Debug for MaskinportenToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaskinportenToken")
            .field("access_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish()
    }
}

/// Maskinporten's OAuth error, e.g. `invalid_grant` or `invalid_altinn_customer_configuration`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OAuthError {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

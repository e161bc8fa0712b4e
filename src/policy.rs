//! Which AdminFlow role grants which Altinn access package.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The default mapping, as written in the product's help page.
pub const DEFAULT_ROLE_MAPPING: &str = "PayrollAccountant=regnskapsforer-lonn,\
AccountantWithSigningRights=regnskapsforer-med-signeringsrettighet,\
AccountantWithoutSigningRights=regnskapsforer-uten-signeringsrettighet";

/// Role → access package. Roles not in the mapping are kept on the employee and grant nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleMapping(BTreeMap<String, String>);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("role mapping entry {0:?} is not of the form Role=package")]
    Entry(String),
    #[error("role {0:?} is mapped twice")]
    Duplicate(String),
    #[error("the role mapping is empty")]
    Empty,
    #[error("{0:?} is neither grant nor revoke")]
    Action(String),
}

impl RoleMapping {
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(r, p)| (r.as_str(), p.as_str()))
    }

    pub fn roles(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    pub fn packages(&self) -> Vec<String> {
        self.0.values().cloned().collect()
    }

    pub fn package_for(&self, role: &str) -> Option<&str> {
        self.0.get(role).map(String::as_str)
    }
}

impl Default for RoleMapping {
    #[expect(clippy::expect_used, reason = "a constant; a unit test parses it")]
    fn default() -> Self {
        DEFAULT_ROLE_MAPPING
            .parse()
            .expect("the default mapping parses")
    }
}

impl FromStr for RoleMapping {
    type Err = Error;

    /// Parses `Role=package,Role=package`; whitespace around entries is ignored.
    fn from_str(s: &str) -> Result<Self, Error> {
        let mut map = BTreeMap::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (role, package) = entry
                .split_once('=')
                .map(|(r, p)| (r.trim(), p.trim()))
                .filter(|(r, p)| !r.is_empty() && !p.is_empty())
                .ok_or_else(|| Error::Entry(entry.to_owned()))?;
            if map.insert(role.to_owned(), package.to_owned()).is_some() {
                return Err(Error::Duplicate(role.to_owned()));
            }
        }
        if map.is_empty() {
            return Err(Error::Empty);
        }
        Ok(Self(map))
    }
}

impl fmt::Display for RoleMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries: Vec<String> = self.iter().map(|(r, p)| format!("{r}={p}")).collect();
        f.write_str(&entries.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_mapping_matches_the_help_page() {
        let m = RoleMapping::default();
        assert_eq!(
            m.package_for("PayrollAccountant"),
            Some("regnskapsforer-lonn")
        );
        assert_eq!(
            m.package_for("AccountantWithSigningRights"),
            Some("regnskapsforer-med-signeringsrettighet")
        );
        assert_eq!(
            m.package_for("AccountantWithoutSigningRights"),
            Some("regnskapsforer-uten-signeringsrettighet")
        );
        assert_eq!(m.package_for("Receptionist"), None);
    }

    #[test]
    fn parse_errors_are_clear() {
        assert!(matches!("A".parse::<RoleMapping>(), Err(Error::Entry(_))));
        assert!(matches!(
            "A=x,A=y".parse::<RoleMapping>(),
            Err(Error::Duplicate(_))
        ));
        assert!(matches!(" , ".parse::<RoleMapping>(), Err(Error::Empty)));
        let m: RoleMapping = " A = x , B=y ".parse().unwrap();
        assert_eq!(m.to_string(), "A=x,B=y");
    }
}

/// The two changes a flush asks of Altinn, stored as `grant` and `revoke` in `outbox.action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Grant,
    Revoke,
}

impl Action {
    pub const ALL: [Action; 2] = [Action::Grant, Action::Revoke];

    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Grant => "grant",
            Action::Revoke => "revoke",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "grant" => Ok(Action::Grant),
            "revoke" => Ok(Action::Revoke),
            other => Err(Error::Action(other.to_owned())),
        }
    }
}

// Read straight from `outbox.action` (text) by the compile-checked queries: `AS "action: Action"`.
impl sqlx::Type<sqlx::Postgres> for Action {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <&str as sqlx::Type<sqlx::Postgres>>::type_info()
    }

    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl sqlx::Decode<'_, sqlx::Postgres> for Action {
    fn decode(value: sqlx::postgres::PgValueRef<'_>) -> Result<Self, sqlx::error::BoxDynError> {
        Ok(<&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?.parse()?)
    }
}

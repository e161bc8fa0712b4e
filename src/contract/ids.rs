//! Identifiers and free text carried by AdminFlow messages, checked the way Altinn will check them.

use std::fmt;

use uuid::Uuid;

use super::{ContractError, Rules};

/// A Norwegian organisation number: nine digits, the last a mod-11 check digit.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrgNumber(String);

impl OrgNumber {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ContractError> {
        let digits = digits_of(raw, 9).ok_or(ContractError::Schema {
            field,
            reason: "must be exactly 9 digits",
        })?;
        let check = mod11(&digits[..8], &[3, 2, 7, 6, 5, 4, 3, 2]);
        if check != Some(digits[8]) {
            return Err(ContractError::Checksum {
                field,
                reason: "the organisation number's check digit is wrong",
            });
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrgNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for OrgNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OrgNumber({})", self.0)
    }
}

/// A national identity number (fødselsnummer or D-number).
///
/// It is personal data: `Debug` and `Display` never show it, so it cannot leak into logs or
/// traces by accident. Only [`NationalIdentityNumber::expose`] hands out the digits, for the
/// database and for Altinn.
#[derive(Clone, PartialEq, Eq)]
pub struct NationalIdentityNumber(String);

impl NationalIdentityNumber {
    pub fn parse(raw: &str, rules: &Rules) -> Result<Self, ContractError> {
        const FIELD: &str = "national_identity_number";
        let d = digits_of(raw, 11).ok_or(ContractError::Schema {
            field: FIELD,
            reason: "must be exactly 11 digits",
        })?;
        let checksum = |reason| ContractError::Checksum {
            field: FIELD,
            reason,
        };
        if mod11(&d[..9], &[3, 7, 6, 1, 8, 9, 4, 5, 2]) != Some(d[9]) {
            return Err(checksum("the first check digit is wrong"));
        }
        if mod11(&d[..10], &[5, 4, 3, 2, 7, 6, 5, 4, 3, 2]) != Some(d[10]) {
            return Err(checksum("the second check digit is wrong"));
        }
        let day = d[0] * 10 + d[1];
        let month = d[2] * 10 + d[3];
        // D-numbers add 40 to the day; Tenor's synthetic test persons add 80 to the month.
        if !matches!(day, 1..=31 | 41..=71) {
            return Err(checksum("the day of birth is not a possible day"));
        }
        match month {
            1..=12 => {}
            81..=92 if rules.allow_synthetic_nin => {}
            81..=92 => {
                return Err(checksum(
                    "synthetic test numbers are accepted only in a test environment",
                ));
            }
            _ => return Err(checksum("the month of birth is not a possible month")),
        }
        Ok(Self(raw.to_owned()))
    }

    /// The digits, for storage and for Altinn. Never log the result.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NationalIdentityNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NationalIdentityNumber(<redacted>)")
    }
}

/// Parses a UUID in its hyphenated 36-character form only; braced, URN and bare forms are refused.
pub fn strict_uuid(field: &'static str, raw: &str) -> Result<Uuid, ContractError> {
    let bad = ContractError::Schema {
        field,
        reason: "must be a UUID in the hyphenated 8-4-4-4-12 form",
    };
    let shaped = raw.len() == 36
        && raw.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    if !shaped {
        return Err(bad);
    }
    Uuid::parse_str(raw).map_err(|_| bad)
}

/// Checks free text: not empty, not longer than `max` characters, no control characters
/// (Unicode category Cc, which includes NUL).
pub fn text(field: &'static str, raw: &str, max: usize) -> Result<String, ContractError> {
    if raw.is_empty() {
        return Err(ContractError::Schema {
            field,
            reason: "must not be empty",
        });
    }
    if raw.chars().count() > max {
        return Err(ContractError::Schema {
            field,
            reason: "is too long",
        });
    }
    if raw.chars().any(char::is_control) {
        return Err(ContractError::Schema {
            field,
            reason: "must not contain control characters",
        });
    }
    Ok(raw.to_owned())
}

fn digits_of(raw: &str, len: usize) -> Option<Vec<u32>> {
    if raw.len() != len {
        return None;
    }
    raw.chars().map(|c| c.to_digit(10)).collect()
}

/// The mod-11 check digit over `digits`, or `None` when the remainder makes the number invalid.
fn mod11(digits: &[u32], weights: &[u32]) -> Option<u32> {
    let sum: u32 = digits.iter().zip(weights).map(|(d, w)| d * w).sum();
    match 11 - sum % 11 {
        11 => Some(0),
        10 => None,
        k => Some(k),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST: Rules = Rules {
        allow_synthetic_nin: true,
        max_body_bytes: 1024,
    };
    const PROD: Rules = Rules {
        allow_synthetic_nin: false,
        max_body_bytes: 1024,
    };

    /// Appends valid check digits to nine leading digits.
    fn nin(first9: &str) -> String {
        let d: Vec<u32> = first9.chars().map(|c| c.to_digit(10).unwrap()).collect();
        let k1 = mod11(&d, &[3, 7, 6, 1, 8, 9, 4, 5, 2]).unwrap();
        let mut d10 = d.clone();
        d10.push(k1);
        let k2 = mod11(&d10, &[5, 4, 3, 2, 7, 6, 5, 4, 3, 2]).unwrap();
        format!("{first9}{k1}{k2}")
    }

    #[test]
    fn org_numbers() {
        assert!(OrgNumber::parse("org", "974760673").is_ok()); // Brønnøysundregistrene
        assert!(OrgNumber::parse("org", "912345610").is_ok()); // the contract's example
        assert!(matches!(
            OrgNumber::parse("org", "974760674"),
            Err(ContractError::Checksum { .. })
        ));
        assert!(matches!(
            OrgNumber::parse("org", "97476067"),
            Err(ContractError::Schema { .. })
        ));
        assert!(OrgNumber::parse("org", "97476067a").is_err());
    }

    #[test]
    fn identity_numbers() {
        let plain = nin("150385123");
        assert!(NationalIdentityNumber::parse(&plain, &PROD).is_ok());
        let d_number = nin("550385123");
        assert!(NationalIdentityNumber::parse(&d_number, &PROD).is_ok());
        let synthetic = nin("158885123");
        assert!(NationalIdentityNumber::parse(&synthetic, &PROD).is_err());
        assert!(NationalIdentityNumber::parse(&synthetic, &TEST).is_ok());
        let mut wrong = plain.clone().into_bytes();
        wrong[10] = if wrong[10] == b'9' {
            b'0'
        } else {
            wrong[10] + 1
        };
        assert!(matches!(
            NationalIdentityNumber::parse(std::str::from_utf8(&wrong).unwrap(), &PROD),
            Err(ContractError::Checksum { .. })
        ));
        let month13 = nin("151385123");
        assert!(NationalIdentityNumber::parse(&month13, &TEST).is_err());
    }

    #[test]
    fn identity_numbers_never_print() {
        let n = NationalIdentityNumber::parse(&nin("150385123"), &PROD).unwrap();
        assert!(!format!("{n:?}").contains("150385"));
    }

    #[test]
    fn uuids_are_strict() {
        let id = "6a0c3f9e-2b7d-4c1a-9a55-0d9f3b1e7c21";
        assert!(strict_uuid("id", id).is_ok());
        assert!(strict_uuid("id", &format!("{{{id}}}")).is_err());
        assert!(strict_uuid("id", &format!("urn:uuid:{id}")).is_err());
        assert!(strict_uuid("id", &id.replace('-', "")).is_err());
    }

    #[test]
    fn text_rules() {
        assert!(text("name", "Nordmann", 10).is_ok());
        assert!(text("name", "", 10).is_err());
        assert!(text("name", "a\u{0}b", 10).is_err());
        assert!(text("name", "a\u{7}b", 10).is_err());
        assert!(text("name", "a\u{85}b", 10).is_err());
        assert!(text("name", "Ærlig Øst Åsen", 20).is_ok());
        assert!(text("name", "abcdefghijk", 10).is_err());
    }
}

//! The contract's rules, written again from the schemas' descriptions (`schemas/*/…schema.json`,
//! `$defs`), so the targets compare the decoder with a second reading rather than with itself.

/// `check = 11 - sum mod 11`, 11 becomes 0, 10 means no valid number.
fn mod11(digits: &[u8], weights: &[u8]) -> Option<u8> {
    let sum: u32 = digits
        .iter()
        .zip(weights)
        .map(|(&d, &w)| u32::from(d) * u32::from(w))
        .sum();
    match 11 - sum % 11 {
        11 => Some(0),
        10 => None,
        k => Some(u8::try_from(k).unwrap()),
    }
}

fn ascii_digits(raw: &str, len: usize) -> Option<Vec<u8>> {
    let b = raw.as_bytes();
    (b.len() == len && b.iter().all(u8::is_ascii_digit))
        .then(|| b.iter().map(|d| d - b'0').collect())
}

/// Nine ASCII digits, the last a mod-11 check digit (weights 3,2,7,6,5,4,3,2).
pub fn org_number_ok(raw: &str) -> bool {
    ascii_digits(raw, 9).is_some_and(|d| mod11(&d[..8], &[3, 2, 7, 6, 5, 4, 3, 2]) == Some(d[8]))
}

/// The check digit for eight leading digits, if any number has them.
pub fn org_check_digit(first8: &[u8; 8]) -> Option<u8> {
    mod11(first8, &[3, 2, 7, 6, 5, 4, 3, 2])
}

const K1: [u8; 9] = [3, 7, 6, 1, 8, 9, 4, 5, 2];
const K2: [u8; 10] = [5, 4, 3, 2, 7, 6, 5, 4, 3, 2];

/// Eleven ASCII digits, both check digits right, day 1-31 (41-71 for D-numbers), month 1-12
/// (81-92 for synthetic test persons, only when `synthetic` is allowed).
pub fn nin_ok(raw: &str, synthetic: bool) -> bool {
    let Some(d) = ascii_digits(raw, 11) else {
        return false;
    };
    let day = d[0] * 10 + d[1];
    let month = d[2] * 10 + d[3];
    mod11(&d[..9], &K1) == Some(d[9])
        && mod11(&d[..10], &K2) == Some(d[10])
        && matches!(day, 1..=31 | 41..=71)
        && (matches!(month, 1..=12) || (synthetic && matches!(month, 81..=92)))
}

/// Nine leading digits with both check digits appended, if they exist.
pub fn nin_with_checks(first9: &[u8; 9]) -> Option<String> {
    let k1 = mod11(first9, &K1)?;
    let mut ten = first9.to_vec();
    ten.push(k1);
    let k2 = mod11(&ten, &K2)?;
    ten.push(k2);
    Some(ten.iter().map(|d| char::from(b'0' + d)).collect())
}

/// The schema's `timestamp` pattern:
/// `^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$`.
pub fn timestamp_shape_ok(raw: &str) -> bool {
    let b = raw.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    let fixed = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !fixed {
        return false;
    }
    let mut rest = &b[19..];
    if rest.first() == Some(&b'.') {
        let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&n) {
            return false;
        }
        rest = &rest[1 + n..];
    }
    rest == b"Z"
        || (rest.len() == 6
            && matches!(rest[0], b'+' | b'-')
            && rest[1..3].iter().all(u8::is_ascii_digit)
            && rest[3] == b':'
            && rest[4..6].iter().all(u8::is_ascii_digit))
}

/// Whether a timestamp of the schema's shape names a real calendar date and time: month 1-12,
/// a day the month has, hour < 24, minute and second < 60, offset hours < 24 and minutes < 60.
/// The year stays within 0000-9999 once converted to UTC. `None` for a leap second (`:60`),
/// which the contract neither allows nor forbids.
pub fn timestamp_real(raw: &str) -> Option<bool> {
    let n = |r: std::ops::Range<usize>| raw[r].parse::<u32>().unwrap();
    let (year, month, day) = (n(0..4), n(5..7), n(8..10));
    let (hour, minute, second) = (n(11..13), n(14..16), n(17..19));
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Some(false),
    };
    let offset_ok = raw.ends_with('Z') || {
        let l = raw.len();
        n(l - 5..l - 3) < 24 && n(l - 2..l) < 60
    };
    if second == 60 {
        return None;
    }
    let real = (1..=days).contains(&day) && hour < 24 && minute < 60 && second < 60 && offset_ok;
    Some(real && utc_year_in_range(raw, (year, month, day), hour * 3600 + minute * 60 + second))
}

/// Only the first day of year 0000 with a positive offset, and the last of 9999 with a negative
/// one, can leave the four-digit years in UTC.
fn utc_year_in_range(raw: &str, (year, month, day): (u32, u32, u32), local_secs: u32) -> bool {
    if raw.ends_with('Z') {
        return true;
    }
    let l = raw.len();
    let n = |r: std::ops::Range<usize>| raw[r].parse::<u32>().unwrap();
    let offset_secs = n(l - 5..l - 3) * 3600 + n(l - 2..l) * 60;
    match (year, month, day, raw.as_bytes()[l - 6]) {
        (0, 1, 1, b'+') => local_secs >= offset_secs,
        (9999, 12, 31, b'-') => local_secs + offset_secs < 24 * 3600,
        _ => true,
    }
}

/// 8-4-4-4-12 hex digits, either case.
pub fn uuid_ok(raw: &str) -> bool {
    raw.len() == 36
        && raw.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Free text: not empty, at most `max` characters, none in U+0000-U+001F or U+007F-U+009F.
pub fn text_ok(raw: &str, max: usize) -> bool {
    !raw.is_empty()
        && raw.chars().count() <= max
        && !raw
            .chars()
            .any(|c| matches!(u32::from(c), 0..=0x1f | 0x7f..=0x9f))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The numbers and times are the contract's own examples (schemas/examples/).
    #[test]
    fn organisation_numbers() {
        assert!(org_number_ok("912345610"));
        assert!(org_number_ok("998877660"));
        assert!(
            !org_number_ok("912345611"),
            "firm-org-number-bad-check-digit"
        );
        assert!(!org_number_ok("91234561"), "firm-org-number-8-digits");
        assert_eq!(org_check_digit(&[9, 1, 2, 3, 4, 5, 6, 1]), Some(0));
    }

    #[test]
    fn identity_numbers() {
        assert!(nin_ok("15038512363", false));
        assert!(!nin_ok("15038512364", false), "nin-bad-second-check-digit");
        assert_eq!(
            nin_with_checks(&[1, 5, 0, 3, 8, 5, 1, 2, 3]).as_deref(),
            Some("15038512363")
        );
        let synthetic = nin_with_checks(&[1, 5, 8, 8, 8, 5, 1, 2, 3]).unwrap();
        assert!(!nin_ok(&synthetic, false) && nin_ok(&synthetic, true));
    }

    #[test]
    fn timestamps() {
        assert!(timestamp_shape_ok("2026-03-15T09:30:00Z"));
        assert!(timestamp_shape_ok("2026-03-15T09:30:00.123456789+01:00"));
        assert!(!timestamp_shape_ok("2026-03-15T09:30:00.1234567890Z"));
        assert!(
            !timestamp_shape_ok("2026-03-15 09:30:00Z"),
            "occurred-at-space-separator"
        );
        assert!(
            !timestamp_shape_ok("2026-03-15T09:30:00"),
            "occurred-at-no-offset"
        );
        assert_eq!(
            timestamp_real("2024-02-29T00:00:00Z"),
            Some(true),
            "sequence-zero-leap-day"
        );
        assert_eq!(timestamp_real("2026-02-30T09:15:00Z"), Some(false));
        assert_eq!(timestamp_real("2026-03-15T24:00:00Z"), Some(false));
        assert_eq!(timestamp_real("2026-12-31T23:59:60Z"), None);
        // D7: in UTC these leave the four-digit years.
        assert_eq!(timestamp_real("0000-01-01T00:30:00+01:00"), Some(false));
        assert_eq!(timestamp_real("9999-12-31T23:30:00-01:00"), Some(false));
        assert_eq!(timestamp_real("0000-01-01T01:00:00+01:00"), Some(true));
        assert_eq!(timestamp_real("9999-12-31T22:59:59-01:00"), Some(true));
        assert_eq!(timestamp_real("0000-01-01T00:30:00-01:00"), Some(true));
    }

    #[test]
    fn text_and_uuids() {
        assert!(text_ok("Bjørnstad & Sønner AS", 500));
        assert!(!text_ok("a\u{85}b", 500), "client-name-c1-control");
        assert!(text_ok(&"Ø".repeat(200), 200) && !text_ok(&"Ø".repeat(201), 200));
        assert!(uuid_ok("6A1F0C3E-2B7D-4D5A-8E9F-1C2B3A4D5E6F"));
        assert!(
            !uuid_ok("{6a1f0c3e-2b7d-4d5a-8e9f-1c2b3a4d5e6f}"),
            "event-id-braced"
        );
    }
}

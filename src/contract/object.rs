//! JSON objects only. serde's derived `Deserialize` also reads a struct from a sequence of its
//! fields in order, so `"firm": ["912345610"]` would pass for `"firm": {"org_number": …}`; the
//! schemas require objects. [`Object`] asks the parser for a map and nothing else, at the cost
//! of one indirection: the struct's own derived code still reads the fields.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

/// A `T` that was written as a JSON object.
pub(super) struct Object<T>(pub(super) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Only<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Only<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Object)
            }
        }
        d.deserialize_map(Only(PhantomData))
    }
}

/// For `#[serde(deserialize_with = "object")]`: a required field that must be an object.
pub(super) fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Object::deserialize(d).map(|Object(t)| t)
}

/// For `#[serde(deserialize_with = "optional_object")]`: an object or null. Without
/// `#[serde(default)]` the key is still required.
pub(super) fn optional_object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Option::<Object<T>>::deserialize(d).map(|o| o.map(|Object(t)| t))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Firm {
        org_number: String,
    }

    #[derive(Debug, Deserialize)]
    struct Envelope {
        #[serde(deserialize_with = "object")]
        firm: Firm,
        #[serde(default, deserialize_with = "optional_object")]
        other: Option<Firm>,
    }

    fn parse(json: &str) -> Result<Envelope, String> {
        serde_json::from_str::<Object<Envelope>>(json)
            .map(|Object(e)| e)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn objects_are_read() {
        let e = parse(r#"{"firm":{"org_number":"912345610"},"other":null}"#).unwrap();
        assert_eq!(e.firm.org_number, "912345610");
        assert_eq!(e.other, None);
        let e = parse(r#"{"firm":{"org_number":"1"},"other":{"org_number":"2"}}"#).unwrap();
        assert_eq!(e.other.unwrap().org_number, "2");
    }

    #[test]
    fn arrays_of_the_fields_are_refused() {
        let err = parse(r#"{"firm":["912345610"]}"#).unwrap_err();
        assert!(
            err.starts_with("invalid type: sequence, expected a JSON object"),
            "{err}"
        );
        assert!(parse(r#"{"firm":{"org_number":"1"},"other":["2"]}"#).is_err());
        assert!(parse(r#"[{"org_number":"1"}]"#).is_err());
        // serde alone would take all three.
        assert!(serde_json::from_str::<Firm>(r#"["912345610"]"#).is_ok());
    }
}

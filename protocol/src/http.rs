//! Bodies of the orchestrator's HTTP database API (see `docs/api.md` at the repository root).
//!
//! Every request type rejects unknown fields: a typo in a client must be a `400`, never silently ignored.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A SQL parameter or result value. JSON `null`, numbers and strings only: SQLite's `NULL`, `INTEGER`, `REAL` and
/// `TEXT`. Blobs come back as strings of lowercase hex, since JSON has no bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
}

/// JSON `null`, a number or a string: `"type": ["null", "number", "string"]`.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Value {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
        ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::Null, Type::Number, Type::String]))
            .description(Some(
                "SQLite's NULL, INTEGER (64 bits), REAL or TEXT; a blob reads back as lowercase hex",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Value {}

/// `params`: a list of [`Value`]s. Spelled out because utoipa's derive takes any type named `Value` for
/// `serde_json::Value` (any JSON at all), which would document objects and booleans as valid parameters.
#[cfg(feature = "openapi")]
fn values_schema() -> utoipa::openapi::Array {
    utoipa::openapi::ArrayBuilder::new()
        .items(<Value as utoipa::PartialSchema>::schema())
        .build()
}

/// `rows`: a list of rows, each a list of [`Value`]s (see [`values_schema`]).
#[cfg(feature = "openapi")]
fn rows_schema() -> utoipa::openapi::Array {
    utoipa::openapi::ArrayBuilder::new()
        .items(utoipa::openapi::RefOr::T(
            utoipa::openapi::schema::Schema::Array(values_schema()),
        ))
        .build()
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Integer(i) => s.serialize_i64(*i),
            Value::Real(f) => s.serialize_f64(*f),
            Value::Text(t) => s.serialize_str(t),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl Visitor<'_> for ValueVisitor {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("null, a number or a string")
            }
            fn visit_unit<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_none<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
                Ok(Value::Integer(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
                i64::try_from(v).map(Value::Integer).map_err(|_| {
                    E::custom("integer out of range for SQLite (max 9223372036854775807)")
                })
            }
            fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
                Ok(Value::Real(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Value, E> {
                Ok(Value::Text(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Value, E> {
                Ok(Value::Text(v))
            }
        }
        d.deserialize_any(ValueVisitor)
    }
}

/// One SQL statement with `?` placeholders.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// Not empty: the master refuses SQL that is empty or only a comment.
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub sql: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = values_schema))]
    pub params: Vec<Value>,
}

impl Statement {
    pub fn new(sql: impl Into<String>, params: Vec<Value>) -> Self {
        Self {
            sql: sql.into(),
            params,
        }
    }
}

/// `POST /api/v1/db/write`: statements that run as one transaction.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteRequest {
    /// At least one: the master refuses an empty write.
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub statements: Vec<Statement>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatementResult {
    pub rows_affected: u64,
    pub last_insert_id: i64,
}

/// The answer to an applied write: one result per statement, and the log sequence number the write was
/// replicated under (writes batched together share one).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteResponse {
    pub results: Vec<StatementResult>,
    pub seq: u64,
}

/// `POST /api/v1/db/read`: one read-only statement.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadRequest {
    /// Not empty: a slave refuses SQL that is empty or only a comment.
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub sql: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = values_schema))]
    pub params: Vec<Value>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadResponse {
    pub columns: Vec<String>,
    #[cfg_attr(feature = "openapi", schema(schema_with = rows_schema))]
    pub rows: Vec<Vec<Value>>,
}

/// The body of every 4xx and 5xx answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Slave,
}

/// One row of `GET /api/v1/workers`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub pid: u32,
    pub role: Role,
    pub in_sync: bool,
    pub applied_seq: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_from_json_null_numbers_and_strings() {
        let v: Vec<Value> = serde_json::from_str(r#"[null, 7, -3, 2.5, "x"]"#).unwrap();
        assert_eq!(
            v,
            vec![
                Value::Null,
                Value::Integer(7),
                Value::Integer(-3),
                Value::Real(2.5),
                Value::Text("x".into())
            ]
        );
    }

    #[test]
    fn booleans_objects_and_huge_integers_are_not_values() {
        for bad in ["true", "{}", "[1]", "18446744073709551615"] {
            assert!(serde_json::from_str::<Value>(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn a_write_with_an_unknown_field_is_rejected() {
        let r = serde_json::from_str::<WriteRequest>(r#"{"statements": [], "x": 1}"#);
        assert!(r.is_err());
        let r = serde_json::from_str::<WriteRequest>(r#"{"statements": [{"sql": "x", "p": []}]}"#);
        assert!(r.is_err());
    }

    #[test]
    fn a_value_round_trips_through_json() {
        for v in [
            Value::Null,
            Value::Integer(i64::MIN),
            Value::Real(-0.5),
            Value::Text("é\u{0}".into()),
        ] {
            let s = serde_json::to_string(&v).unwrap();
            assert_eq!(serde_json::from_str::<Value>(&s).unwrap(), v);
        }
    }
}

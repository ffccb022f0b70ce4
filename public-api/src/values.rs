//! The typed values of the public API. Each has one constructor that validates, so a value that exists is a
//! valid one: handlers never re-check a username, a password hash, an area or a timestamp.
//!
//! Each also derives `Deserialize` through that constructor (`#[serde(try_from = ...)]`), so a request body with
//! an invalid value is rejected while it is parsed, with the constructor's message.

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};
use time::format_description::StaticFormatDescription;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// Why a value was refused; the message is for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(String);

impl InvalidValue {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

fn invalid(message: impl Into<String>) -> InvalidValue {
    InvalidValue::new(message)
}

/// A username: 1 to 128 characters (Unicode scalar values), none of them a control character, and not `.` or
/// `..`. Compared case-sensitively, as stored.
///
/// Every user must be addressable as one path segment (`/api/v1/users/{username}`), percent-encoded where needed.
/// The dot segments are the only names that cannot be: URL resolution (RFC 3986, section 5.2.4) removes them,
/// and clients and proxies rewrite `%2E` back to `.` before doing so. Any other character, `/` included,
/// survives percent-encoding.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct Username(String);

impl Username {
    pub const MAX_CHARS: usize = 128;

    pub fn parse(s: impl Into<String>) -> Result<Self, InvalidValue> {
        let s = s.into();
        if s.is_empty() {
            return Err(invalid("username must not be empty"));
        }
        if s.chars().count() > Self::MAX_CHARS {
            return Err(invalid(format!(
                "username must be at most {} characters",
                Self::MAX_CHARS
            )));
        }
        if s.chars().any(char::is_control) {
            return Err(invalid("username must not contain control characters"));
        }
        if s == "." || s == ".." {
            return Err(invalid(
                "username must not be `.` or `..`: a URL path cannot address them",
            ));
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Username {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl TryFrom<String> for Username {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, InvalidValue> {
        Self::parse(s)
    }
}

/// A password as the API carries it: the SHA-1 of the password, exactly 40 hexadecimal digits in either case.
/// Kept in lowercase, so two spellings of one hash are one value.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PasswordHash(String);

impl PasswordHash {
    pub const LEN: usize = 40;

    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        if s.len() != Self::LEN || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(format!(
                "password must be exactly {} hexadecimal characters",
                Self::LEN
            )));
        }
        Ok(Self(s.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Never prints the hash itself: it would end up in logs.
impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

impl TryFrom<String> for PasswordHash {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, InvalidValue> {
        Self::parse(&s)
    }
}

/// One of the localities of `AreaNameEnum.csv`, by number: 1 to [`Area::COUNT`]. The services check at start
/// that the file lists exactly these numbers (see [`crate::areas`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "serde_json::Value")]
pub struct Area(u8);

impl Area {
    /// How many areas `AreaNameEnum.csv` lists.
    pub const COUNT: u8 = 198;

    pub fn new(n: u64) -> Result<Self, InvalidValue> {
        match u8::try_from(n) {
            Ok(n) if (1..=Self::COUNT).contains(&n) => Ok(Self(n)),
            _ => Err(Self::out_of_range()),
        }
    }

    /// A string of ASCII digits (leading zeros allowed) naming an area.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Self::out_of_range());
        }
        // Digits only, so the one failure left is overflow: a number far out of range.
        s.parse::<u64>()
            .map_err(|_| Self::out_of_range())
            .and_then(Self::new)
    }

    pub fn number(self) -> u8 {
        self.0
    }

    fn out_of_range() -> InvalidValue {
        invalid(format!(
            "an area must be an integer from 1 to {}, as a number or a string of digits",
            Self::COUNT
        ))
    }
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for Area {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.0)
    }
}

/// Accepts a JSON integer (`7`) or a string of digits (`"7"`, also what a query string holds); refuses
/// fractions (`7.0`), booleans and everything else, all with the same message.
impl TryFrom<serde_json::Value> for Area {
    type Error = InvalidValue;
    fn try_from(value: serde_json::Value) -> Result<Self, InvalidValue> {
        match value {
            serde_json::Value::Number(n) => n.as_u64().map_or(Err(Self::out_of_range()), Self::new),
            serde_json::Value::String(s) => Self::parse(&s),
            _ => Err(Self::out_of_range()),
        }
    }
}

/// The contract's layout of a timestamp, `DD-MM-YYYY:SS-MM-HH`, for parsing and for writing.
const FORMAT: StaticFormatDescription =
    format_description!("[day]-[month]-[year]:[second]-[minute]-[hour]");

/// A moment in UTC, to the second, written `DD-MM-YYYY:SS-MM-HH` (day-month-year, then seconds-minutes-hours).
/// Stored as unix seconds, which sort in time order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct Timestamp(i64);

impl Timestamp {
    /// `DD-MM-YYYY:SS-MM-HH`: where each digit and separator goes.
    const LAYOUT: &'static [u8; 19] = b"DD-MM-YYYY:SS-MM-HH";

    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let malformed = || {
            invalid(format!(
                "timestamp must be a valid date and time written DD-MM-YYYY:SS-MM-HH, got {:?}",
                truncate(s, 40)
            ))
        };
        let bytes = s.as_bytes();
        if bytes.len() != Self::LAYOUT.len() {
            return Err(malformed());
        }
        for (&b, &l) in bytes.iter().zip(Self::LAYOUT) {
            let fits = if l.is_ascii_alphabetic() {
                b.is_ascii_digit()
            } else {
                b == l
            };
            if !fits {
                return Err(malformed());
            }
        }
        // The shape is checked above (exactly two or four ASCII digits per field, no sign, nothing after);
        // what is left is the calendar: a day the month has, a time of day that exists.
        let moment = PrimitiveDateTime::parse(s, FORMAT).map_err(|_| malformed())?;
        Ok(Self(moment.assume_utc().unix_timestamp()))
    }

    /// The current time, truncated to the second.
    pub fn now() -> Self {
        Self(OffsetDateTime::now_utc().unix_timestamp())
    }

    /// A stored value read back. Only moments that can be written with a four-digit year are timestamps.
    pub fn from_unix(seconds: i64) -> Result<Self, InvalidValue> {
        let t = OffsetDateTime::from_unix_timestamp(seconds)
            .map_err(|_| invalid(format!("{seconds} is not a representable time")))?;
        if !(0..=9999).contains(&t.year()) {
            return Err(invalid(format!("{seconds} is outside years 0000 to 9999")));
        }
        Ok(Self(seconds))
    }

    pub fn unix(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every constructor checked that the value is representable with a four-digit year.
        let t = OffsetDateTime::from_unix_timestamp(self.0).expect("a valid timestamp");
        let written = t.format(FORMAT).map_err(|_| fmt::Error)?;
        f.write_str(&written)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl TryFrom<String> for Timestamp {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, InvalidValue> {
        Self::parse(&s)
    }
}

/// The OpenAPI schemas of the values: what their constructors accept, as far as a JSON Schema can say it. A
/// value the schema allows may still be refused (a username `..`, the date `31-02-2031`): the constructor is
/// the authority, and its refusal is a documented `400`.
mod schemas {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
    use utoipa::openapi::RefOr;
    use utoipa::{PartialSchema, ToSchema};

    use super::{Area, PasswordHash, Timestamp, Username};

    impl PartialSchema for Username {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(Username::MAX_CHARS))
                // No control character (Unicode's Cc: what `char::is_control` is).
                .pattern(Some("^[^\\x00-\\x1f\\x7f-\\x9f]*$"))
                .description(Some(
                    "1 to 128 characters, no control character, not `.` or `..`; case-sensitive",
                ))
                .examples(["alice"])
                .into()
        }
    }
    impl ToSchema for Username {}

    impl PartialSchema for PasswordHash {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[0-9a-fA-F]{40}$"))
                .description(Some(
                    "the SHA-1 of the password: 40 hexadecimal digits, either case",
                ))
                .examples(["3d0f3b9ddcacec30c4008c5e030e6c13a478cb4f"])
                .into()
        }
    }
    impl ToSchema for PasswordHash {}

    impl PartialSchema for Area {
        fn schema() -> RefOr<Schema> {
            let number = ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(Area::COUNT));
            // 1 to 198 in decimal digits, leading zeros allowed.
            let digits = ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^0*([1-9]|[1-9][0-9]|1[0-8][0-9]|19[0-8])$"));
            OneOfBuilder::new()
                .item(number)
                .item(digits)
                .description(Some(
                    "one of Bangalore's 198 wards (public-api/data/AreaNameEnum.csv), by number: an \
                     integer or a string of digits",
                ))
                .into()
        }
    }
    impl ToSchema for Area {}

    impl PartialSchema for Timestamp {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(
                    "^[0-9]{2}-[0-9]{2}-[0-9]{4}:[0-9]{2}-[0-9]{2}-[0-9]{2}$",
                ))
                .description(Some(
                    "a moment in UTC written DD-MM-YYYY:SS-MM-HH (day, month, year, then seconds, \
                     minutes, hours); the date must exist",
                ))
                .examples(["08-05-2030:00-53-09"])
                .into()
        }
    }
    impl ToSchema for Timestamp {}
}

/// At most `max` characters of `s`, so an error message quoting client input stays short.
fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_username_is_refused_when_empty_too_long_a_dot_segment_or_holding_a_control_character() {
        assert!(Username::parse("").is_err());
        assert!(Username::parse("a".repeat(129)).is_err());
        assert!(Username::parse("a".repeat(128)).is_ok());
        assert!(
            Username::parse("é".repeat(128)).is_ok(),
            "characters, not bytes"
        );
        for bad in [
            "a\nb",
            "\u{0}",
            "tab\there",
            "del\u{7f}",
            "nel\u{85}",
            ".",
            "..",
        ] {
            assert!(Username::parse(bad).is_err(), "{bad:?}");
        }
        for good in [
            "alice",
            "Alice",
            "a b",
            "🚗 rider",
            "\u{202e}rtl",
            "名前",
            "...",
            ".a",
            "a/..",
            "%2E",
        ] {
            assert_eq!(Username::parse(good).unwrap().as_str(), good);
        }
    }

    #[test]
    fn a_password_hash_is_40_hex_digits_in_either_case() {
        let lower = "da39a3ee5e6b4b0d3255bfef95601890afd80709";
        assert_eq!(PasswordHash::parse(lower).unwrap().as_str(), lower);
        assert_eq!(
            PasswordHash::parse(&lower.to_uppercase()).unwrap(),
            PasswordHash::parse(lower).unwrap()
        );
        for bad in [
            "",
            &lower[1..],
            &format!("{lower}0"),
            &lower.replace('d', "g"),
        ] {
            assert!(PasswordHash::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            format!("{:?}", PasswordHash::parse(lower).unwrap()),
            "PasswordHash(..)"
        );
    }

    #[test]
    fn an_area_is_a_json_integer_or_a_string_of_digits() {
        let parse = |json: &str| serde_json::from_str::<Area>(json);
        assert_eq!(parse("7").unwrap().number(), 7);
        assert_eq!(parse("\"7\"").unwrap().number(), 7);
        assert_eq!(parse("\"007\"").unwrap().number(), 7);
        assert_eq!(parse("198").unwrap().number(), 198);
        for bad in [
            "0",
            "199",
            "-1",
            "7.0",
            "true",
            "null",
            "\"\"",
            "\" 7\"",
            "\"+7\"",
            "\"7a\"",
            "\"99999999999999999999999\"",
            "[7]",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            serde_json::to_string(&Area::new(12).unwrap()).unwrap(),
            "12"
        );
    }

    #[test]
    fn the_timestamp_of_the_contract_example_is_8_may_2030_09_53_utc() {
        let t = Timestamp::parse("08-05-2030:00-53-09").unwrap();
        assert_eq!(t.unix(), 1_904_464_380);
        assert_eq!(t.to_string(), "08-05-2030:00-53-09");
    }

    #[test]
    fn impossible_dates_and_times_are_malformed() {
        for bad in [
            "29-02-2031:00-00-00", // not a leap year
            "31-04-2030:00-00-00",
            "00-05-2030:00-00-00",
            "08-13-2030:00-00-00",
            "08-00-2030:00-00-00",
            "08-05-2030:60-00-00", // no leap seconds
            "08-05-2030:00-60-00",
            "08-05-2030:00-00-24",
            "8-5-2030:0-53-9",
            "08-05-2030 00-53-09",
            "08-05-2030:00-53-09Z",
            "٠٨-05-2030:00-53-09", // Arabic-Indic digits are not ASCII digits
            "",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Timestamp::parse("29-02-2032:59-59-23").is_ok());
    }

    #[test]
    fn stored_values_outside_four_digit_years_are_refused() {
        assert!(Timestamp::from_unix(-62_167_219_200).is_ok()); // 0000-01-01
        assert!(Timestamp::from_unix(-62_167_219_201).is_err());
        assert!(Timestamp::from_unix(253_402_300_799).is_ok()); // 9999-12-31 23:59:59
        assert!(Timestamp::from_unix(253_402_300_800).is_err());
    }

    fn format_parts(day: u32, month: u32, year: u32, s: u32, m: u32, h: u32) -> String {
        format!("{day:02}-{month:02}-{year:04}:{s:02}-{m:02}-{h:02}")
    }

    proptest! {
        #[test]
        fn any_username_of_allowed_characters_round_trips(
            // `.` and `..` are refused on purpose (a test above says so); the
            // generator meets them often enough to fail a CI run.
            s in "[^\\p{Cc}]{1,128}".prop_filter("a dot segment", |s| s != "." && s != ".."),
        ) {
            let u = Username::parse(s.clone()).unwrap();
            prop_assert_eq!(u.as_str(), s.as_str());
            let json = serde_json::to_string(&u).unwrap();
            prop_assert_eq!(serde_json::from_str::<Username>(&json).unwrap(), u);
        }

        #[test]
        fn a_username_with_any_control_character_is_refused(
            before in "[^\\p{Cc}]{0,60}",
            control in "\\p{Cc}",
            after in "[^\\p{Cc}]{0,60}",
        ) {
            let name = format!("{before}{control}{after}");
            prop_assert!(Username::parse(name).is_err());
        }

        #[test]
        fn a_username_longer_than_128_characters_is_refused(s in "[^\\p{Cc}]{129,300}") {
            prop_assert!(Username::parse(s).is_err());
        }

        #[test]
        fn any_40_hex_digits_are_a_password_hash(s in "[0-9a-fA-F]{40}") {
            let hash = PasswordHash::parse(&s).unwrap();
            prop_assert_eq!(hash.as_str(), s.to_ascii_lowercase());
        }

        #[test]
        fn hex_of_any_other_length_is_not_a_password_hash(s in "[0-9a-fA-F]{0,100}") {
            prop_assume!(s.len() != 40);
            prop_assert!(PasswordHash::parse(&s).is_err());
        }

        #[test]
        fn a_password_with_one_non_hex_character_is_refused(
            s in "[0-9a-f]{40}",
            at in 0usize..40,
            bad in "[^0-9a-fA-F]",
        ) {
            let mut chars: Vec<char> = s.chars().collect();
            chars[at] = bad.chars().next().unwrap();
            prop_assert!(PasswordHash::parse(&chars.into_iter().collect::<String>()).is_err());
        }

        #[test]
        fn every_area_number_parses_as_a_number_and_as_digits(n in 1u64..=198, zeros in 0usize..3) {
            let digits = format!("{}{n}", "0".repeat(zeros));
            prop_assert_eq!(Area::new(n).unwrap().number() as u64, n);
            prop_assert_eq!(serde_json::from_str::<Area>(&n.to_string()).unwrap(), Area::new(n).unwrap());
            prop_assert_eq!(serde_json::from_str::<Area>(&format!("{digits:?}")).unwrap(), Area::new(n).unwrap());
        }

        #[test]
        fn numbers_outside_the_areas_are_refused(n in prop_oneof![Just(0u64), 199u64..=u64::MAX]) {
            prop_assert!(Area::new(n).is_err());
            prop_assert!(Area::parse(&n.to_string()).is_err());
            prop_assert!(serde_json::from_str::<Area>(&n.to_string()).is_err());
        }

        #[test]
        fn a_string_that_is_not_all_digits_is_not_an_area(s in ".*[^0-9].*") {
            prop_assert!(Area::parse(&s).is_err());
        }

        #[test]
        fn any_valid_moment_formats_and_parses_back_to_itself(
            seconds in -62_167_219_200i64..=253_402_300_799,
        ) {
            let t = Timestamp::from_unix(seconds).unwrap();
            let text = t.to_string();
            prop_assert_eq!(Timestamp::parse(&text).unwrap(), t);
            let json = serde_json::to_string(&t).unwrap();
            prop_assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
        }

        #[test]
        fn a_written_timestamp_parses_to_the_same_fields(
            year in 0u32..=9999, month in 1u32..=12, day in 1u32..=28,
            h in 0u32..24, m in 0u32..60, s in 0u32..60,
        ) {
            let text = format_parts(day, month, year, s, m, h);
            let t = Timestamp::parse(&text).unwrap();
            prop_assert_eq!(t.to_string(), text);
        }

        #[test]
        fn a_field_out_of_its_range_is_malformed(
            year in 0u32..=9999, month in 1u32..=12, day in 1u32..=28,
            h in 0u32..24, m in 0u32..60, s in 0u32..60,
            which in 0usize..5,
            bad_month in prop_oneof![Just(0u32), 13u32..=99],
            bad_day in prop_oneof![Just(0u32), 32u32..=99],
            bad_h in 24u32..=99, bad_m in 60u32..=99, bad_s in 60u32..=99,
        ) {
            let text = match which {
                0 => format_parts(day, bad_month, year, s, m, h),
                1 => format_parts(bad_day, month, year, s, m, h),
                2 => format_parts(day, month, year, s, m, bad_h),
                3 => format_parts(day, month, year, s, bad_m, h),
                _ => format_parts(day, month, year, bad_s, m, h),
            };
            prop_assert!(Timestamp::parse(&text).is_err(), "{}", text);
        }

        #[test]
        fn any_string_not_shaped_like_a_timestamp_is_malformed(s in "\\PC{0,30}") {
            let shaped = s.len() == 19
                && s.bytes().zip(Timestamp::LAYOUT.iter()).all(|(b, &l)| {
                    if l.is_ascii_alphabetic() { b.is_ascii_digit() } else { b == l }
                });
            prop_assume!(!shaped);
            prop_assert!(Timestamp::parse(&s).is_err());
        }
    }
}

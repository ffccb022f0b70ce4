//! The rides service's data: its models and their queries, all through the orchestrator (parameterized SQL;
//! every change one `db/write`, so it is atomic).

use std::fmt;

use protocol::{Statement, Value};
use public_api::db::{int, text, RowExt};
use public_api::{Area, Db, DbError, InvalidValue, Timestamp, Username};
use serde::Serialize;

/// The upcoming rides between two areas. Every parameter of the two hot reads goes through `CAST(? AS INTEGER)` (a
/// no-op on the integers sent): SQLite compiles a statement with `column = ?` and an `ORDER BY` again on every
/// run after a new binding, and that was a tenth of the slaves' CPU under read load (README, Figures); with the
/// cast, the slave's cached statement is reused as is (`the_hot_reads_are_compiled_once` checks it).
pub const UPCOMING_SQL: &str = "SELECT id, created_by, timestamp FROM rides \
     WHERE source = CAST(? AS INTEGER) AND destination = CAST(? AS INTEGER) AND timestamp > CAST(? AS INTEGER) \
     ORDER BY timestamp, id";

/// A ride and its members, in join order (see [`UPCOMING_SQL`] for the cast).
pub const FIND_SQL: &str =
    "SELECT r.id, r.created_by, r.timestamp, r.source, r.destination, m.username \
     FROM rides r LEFT JOIN ride_members m ON m.ride_id = r.id \
     WHERE r.id = CAST(? AS INTEGER) ORDER BY m.position";

/// A ride's id: a positive integer, assigned by the database (AUTOINCREMENT, never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RideId(i64);

impl RideId {
    /// A path segment of ASCII digits (leading zeros allowed) naming a positive integer that fits an i64.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let invalid =
            || InvalidValue::new(format!("rideId must be a positive integer, got {s:.40?}"));
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        match s.parse::<i64>() {
            Ok(n) if n > 0 => Ok(Self(n)),
            _ => Err(invalid()),
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }

    fn from_db(n: i64) -> Result<Self, DbError> {
        if n > 0 {
            Ok(Self(n))
        } else {
            Err(unexpected(format!("ride id {n} is not positive")))
        }
    }
}

impl utoipa::PartialSchema for RideId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Int64,
            )))
            .minimum(Some(1))
            .into()
    }
}

impl utoipa::ToSchema for RideId {}

impl fmt::Display for RideId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A ride to create: each field already valid on its own.
#[derive(Debug, Clone)]
pub struct NewRide {
    pub created_by: Username,
    pub timestamp: Timestamp,
    pub source: Area,
    pub destination: Area,
}

/// One line of the upcoming-rides list.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RideSummary {
    #[serde(rename = "rideId")]
    pub id: RideId,
    /// The creator.
    pub username: String,
    pub timestamp: Timestamp,
}

/// A ride with its members.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Ride {
    #[serde(rename = "rideId")]
    pub id: RideId,
    pub created_by: String,
    /// The users who joined, in join order; not the creator.
    pub users: Vec<String>,
    pub timestamp: Timestamp,
    pub source: Area,
    pub destination: Area,
}

/// Inserts the ride. `None` when the creator is not (any longer) a user: the foreign key refused it.
pub async fn insert(db: &Db, ride: &NewRide) -> Result<Option<RideId>, DbError> {
    let insert = Statement::new(
        "INSERT INTO rides (created_by, timestamp, source, destination) VALUES (?, ?, ?, ?)",
        vec![
            text(ride.created_by.as_str()),
            int(ride.timestamp.unix()),
            int(ride.source.number()),
            int(ride.destination.number()),
        ],
    );
    match db.write(vec![insert]).await {
        Ok(written) => {
            let result = written
                .results
                .first()
                .ok_or_else(|| unexpected("no result for the insert".to_owned()))?;
            RideId::from_db(result.last_insert_id).map(Some)
        }
        Err(DbError::Rejected(reason)) if reason.contains("FOREIGN KEY") => Ok(None),
        Err(e) => Err(e),
    }
}

/// The rides from `source` to `destination` later than `now`, earliest first (ties in creation order).
pub async fn upcoming(
    db: &Db,
    source: Area,
    destination: Area,
    now: Timestamp,
) -> Result<Vec<RideSummary>, DbError> {
    let rows = db
        .read(
            UPCOMING_SQL,
            vec![
                int(source.number()),
                int(destination.number()),
                int(now.unix()),
            ],
        )
        .await?;
    rows.rows
        .iter()
        .map(|row| {
            Ok(RideSummary {
                id: RideId::from_db(row.int(0)?)?,
                username: row.text(1)?.to_owned(),
                timestamp: timestamp(row.int(2)?)?,
            })
        })
        .collect()
}

/// The ride and its members, read in one query (so from one consistent state).
pub async fn find(db: &Db, id: RideId) -> Result<Option<Ride>, DbError> {
    let rows = db.read(FIND_SQL, vec![int(id.get())]).await?;
    let Some(first) = rows.rows.first() else {
        return Ok(None);
    };
    let mut ride = Ride {
        id: RideId::from_db(first.int(0)?)?,
        created_by: first.text(1)?.to_owned(),
        users: Vec::new(),
        timestamp: timestamp(first.int(2)?)?,
        source: area(first.int(3)?)?,
        destination: area(first.int(4)?)?,
    };
    for row in &rows.rows {
        // A ride without members comes back as one row with a NULL member.
        if !matches!(row.get(5), Some(Value::Null)) {
            ride.users.push(row.text(5)?.to_owned());
        }
    }
    Ok(Some(ride))
}

/// What a join came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    Joined,
    /// The ride is gone, or the user created it, or it is no longer in the future: the insert found no row
    /// to copy. The caller reads the ride again to say which.
    NotEligible,
    AlreadyMember,
    /// The user is not (any longer) a user: the foreign key refused the membership.
    UnknownUser,
}

/// Adds `username` to the ride's members, in one statement that re-checks at write time what the caller
/// checked before (the ride exists, the user is not its creator, the ride is still in the future), so a
/// concurrent delete or the clock cannot slip between check and write. The primary key makes concurrent
/// joins of one user to one ride add one row.
pub async fn join(
    db: &Db,
    id: RideId,
    username: &Username,
    now: Timestamp,
) -> Result<Join, DbError> {
    let insert = Statement::new(
        "INSERT INTO ride_members (ride_id, username, position) \
         SELECT id, ?, (SELECT COALESCE(MAX(position), 0) + 1 FROM ride_members WHERE ride_id = ?) \
         FROM rides WHERE id = ? AND created_by <> ? AND timestamp > ?",
        vec![
            text(username.as_str()),
            int(id.get()),
            int(id.get()),
            text(username.as_str()),
            int(now.unix()),
        ],
    );
    match db.write(vec![insert]).await {
        Ok(written) if written.results.first().is_some_and(|r| r.rows_affected > 0) => {
            Ok(Join::Joined)
        }
        Ok(_) => Ok(Join::NotEligible),
        Err(DbError::Rejected(reason)) if reason.contains("UNIQUE") => Ok(Join::AlreadyMember),
        Err(DbError::Rejected(reason)) if reason.contains("FOREIGN KEY") => Ok(Join::UnknownUser),
        Err(e) => Err(e),
    }
}

/// Deletes the ride and its memberships (ON DELETE CASCADE); whether there was such a ride.
pub async fn delete(db: &Db, id: RideId) -> Result<bool, DbError> {
    let written = db
        .write(vec![Statement::new(
            "DELETE FROM rides WHERE id = ?",
            vec![int(id.get())],
        )])
        .await?;
    Ok(written.results.first().is_some_and(|r| r.rows_affected > 0))
}

pub async fn count(db: &Db) -> Result<u64, DbError> {
    let rows = db.read("SELECT COUNT(*) FROM rides", vec![]).await?;
    let n = rows
        .rows
        .first()
        .ok_or_else(|| unexpected("COUNT(*) returned no row".to_owned()))?
        .int(0)?;
    u64::try_from(n).map_err(|_| unexpected(format!("COUNT(*) returned {n}")))
}

/// Deletes every ride and every membership.
pub async fn delete_all(db: &Db) -> Result<(), DbError> {
    db.write(vec![Statement::new("DELETE FROM rides", vec![])])
        .await
        .map(|_| ())
}

fn timestamp(unix: i64) -> Result<Timestamp, DbError> {
    Timestamp::from_unix(unix).map_err(|e| unexpected(format!("stored timestamp: {e}")))
}

fn area(n: i64) -> Result<Area, DbError> {
    u64::try_from(n)
        .map_err(|_| InvalidValue::new(format!("{n}")))
        .and_then(Area::new)
        .map_err(|e| unexpected(format!("stored area {n}: {e}")))
}

fn unexpected(message: String) -> DbError {
    DbError::Unexpected(anyhow::anyhow!(message))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_ride_id_is_a_positive_integer_in_digits() {
        assert_eq!(RideId::parse("1").unwrap().get(), 1);
        assert_eq!(RideId::parse("007").unwrap().get(), 7);
        assert_eq!(
            RideId::parse("9223372036854775807").unwrap().get(),
            i64::MAX
        );
        for bad in [
            "",
            "0",
            "-1",
            "+1",
            "1.0",
            "1e3",
            " 1",
            "abc",
            "9223372036854775808",
            "١",
        ] {
            assert!(RideId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn summaries_and_rides_serialize_as_the_contract_says() {
        let t = Timestamp::parse("08-05-2030:00-53-09").unwrap();
        let summary = RideSummary {
            id: RideId(3),
            username: "alice".into(),
            timestamp: t,
        };
        assert_eq!(
            serde_json::to_value(&summary).unwrap(),
            serde_json::json!({"rideId": 3, "username": "alice", "timestamp": "08-05-2030:00-53-09"})
        );
        let ride = Ride {
            id: RideId(3),
            created_by: "alice".into(),
            users: vec!["bob".into()],
            timestamp: t,
            source: Area::new(1).unwrap(),
            destination: Area::new(2).unwrap(),
        };
        assert_eq!(
            serde_json::to_value(&ride).unwrap(),
            serde_json::json!({"rideId": 3, "created_by": "alice", "users": ["bob"],
                               "timestamp": "08-05-2030:00-53-09", "source": 1, "destination": 2})
        );
    }

    proptest! {
        #[test]
        fn every_positive_i64_parses_back_from_its_digits(n in 1i64..=i64::MAX) {
            prop_assert_eq!(RideId::parse(&n.to_string()).unwrap().get(), n);
        }

        #[test]
        fn anything_with_a_non_digit_is_not_a_ride_id(s in ".*[^0-9].*") {
            prop_assert!(RideId::parse(&s).is_err());
        }
    }

    /// On SQLite itself, as a slave runs them (a cached statement per connection): each hot read, run with
    /// new parameters, is compiled once, and still finds what it should.
    #[test]
    fn the_hot_reads_are_compiled_once() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for statement in public_api::schema::STATEMENTS {
            conn.execute(statement, []).unwrap();
        }
        conn.execute_batch(
            "INSERT INTO users (username, password) VALUES ('a', 'p');
             INSERT INTO rides (created_by, timestamp, source, destination) VALUES ('a', 100, 1, 2);
             INSERT INTO ride_members (ride_id, username, position) VALUES (1, 'a', 1);",
        )
        .unwrap();
        let runs: [(&str, Vec<Vec<i64>>, usize); 2] = [
            (
                UPCOMING_SQL,
                vec![
                    vec![1, 2, 50],
                    vec![1, 2, 60],
                    vec![1, 2, 99],
                    vec![1, 2, 100],
                ],
                1,
            ),
            (FIND_SQL, vec![vec![1], vec![2], vec![1], vec![1]], 1),
        ];
        for (sql, bindings, rows_for_first) in runs {
            for (i, params) in bindings.iter().enumerate() {
                let mut stmt = conn.prepare_cached(sql).unwrap();
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(params), |_| Ok(()))
                    .unwrap()
                    .count();
                if i == 0 {
                    assert_eq!(rows, rows_for_first, "{sql}");
                }
            }
            let stmt = conn.prepare_cached(sql).unwrap();
            assert_eq!(
                stmt.get_status(rusqlite::StatementStatus::RePrepare),
                0,
                "{sql}"
            );
        }
    }
}

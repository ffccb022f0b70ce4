use super::*;
use proptest::prelude::*;
use protocol::{ReadRequest, StatementResult, Value};

fn st(sql: &str, params: Vec<Value>) -> Statement {
    Statement::new(sql, params)
}

fn write(key: &str, statements: Vec<Statement>) -> Job {
    Job::Write {
        key: key.into(),
        statements,
    }
}

fn pair() -> (tempfile::TempDir, Db, Db) {
    let dir = tempfile::tempdir().unwrap();
    let master = Db::open_master(&dir.path().join("m/db.sqlite")).unwrap();
    let replica = Db::open_replica(&dir.path().join("s/db.sqlite")).unwrap();
    (dir, master, replica)
}

fn replicate(master: &mut Db, replica: &mut Db, jobs: &[Job]) -> Vec<Outcome> {
    let res = master.execute_batch(1, jobs).unwrap();
    for e in &res.entries {
        assert_eq!(replica.apply(e).unwrap(), Applied::Applied);
    }
    res.outcomes
}

const SCHEMA: &str =
    "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE NOT NULL, n INTEGER)";

#[test]
fn a_schema_change_travels_as_statements_and_rows_as_a_changeset() {
    let (_d, mut m, mut s) = pair();
    let res = m
        .execute_batch(1, &[write("a", vec![st(SCHEMA, vec![])])])
        .unwrap();
    assert!(matches!(res.entries[0].payload, Payload::Statements { .. }));
    s.apply(&res.entries[0]).unwrap();
    let res = m
        .execute_batch(
            1,
            &[write(
                "b",
                vec![st(
                    "INSERT INTO t (name, n) VALUES (?, ?)",
                    vec![Value::Text("x".into()), Value::Integer(1)],
                )],
            )],
        )
        .unwrap();
    assert!(matches!(res.entries[0].payload, Payload::Changeset { .. }));
    assert_eq!(
        res.outcomes[0],
        Outcome::Applied(WriteResponse {
            results: vec![StatementResult {
                rows_affected: 1,
                last_insert_id: 1
            }],
            seq: 2
        })
    );
    s.apply(&res.entries[0]).unwrap();
    assert_eq!(m.dump().unwrap(), s.dump().unwrap());
    assert_eq!(s.position(), (1, 2));
}

#[test]
fn a_failing_statement_in_a_write_leaves_no_trace_and_spares_its_neighbours() {
    let (_d, mut m, mut s) = pair();
    replicate(&mut m, &mut s, &[write("schema", vec![st(SCHEMA, vec![])])]);
    let ins = |n: &str| {
        st(
            "INSERT INTO t (name) VALUES (?)",
            vec![Value::Text(n.into())],
        )
    };
    let out = replicate(
        &mut m,
        &mut s,
        &[
            write("1", vec![ins("a")]),
            write("2", vec![ins("b"), ins("a"), ins("c")]),
            write("3", vec![ins("d")]),
        ],
    );
    assert!(matches!(out[0], Outcome::Applied(_)));
    assert_eq!(
        out[1],
        Outcome::Rejected("UNIQUE constraint failed: t.name".into())
    );
    assert!(matches!(out[2], Outcome::Applied(_)));
    let names = read(
        &open_reader(s.path()).unwrap(),
        &ReadRequest {
            sql: "SELECT name FROM t ORDER BY name".into(),
            params: vec![],
        },
    )
    .unwrap();
    assert_eq!(
        names.rows,
        vec![vec![Value::Text("a".into())], vec![Value::Text("d".into())]]
    );
    assert_eq!(m.dump().unwrap(), s.dump().unwrap());
}

#[test]
fn a_repeated_key_is_answered_with_the_first_result_and_applies_once() {
    let (_d, mut m, mut s) = pair();
    replicate(&mut m, &mut s, &[write("schema", vec![st(SCHEMA, vec![])])]);
    let job = write("k", vec![st("INSERT INTO t (name) VALUES ('x')", vec![])]);
    let first = replicate(&mut m, &mut s, std::slice::from_ref(&job));
    let again = replicate(&mut m, &mut s, &[job.clone(), job]);
    let Outcome::Applied(resp) = &first[0] else {
        panic!("{first:?}")
    };
    assert_eq!(
        again,
        vec![
            Outcome::Duplicate(resp.clone()),
            Outcome::Duplicate(resp.clone())
        ]
    );
    let count = read(
        &open_reader(s.path()).unwrap(),
        &ReadRequest {
            sql: "SELECT count(*) FROM t".into(),
            params: vec![],
        },
    )
    .unwrap();
    assert_eq!(count.rows, vec![vec![Value::Integer(1)]]);
}

#[test]
fn users_sql_cannot_touch_internal_tables_pragmas_or_transactions() {
    let (_d, mut m, _s) = pair();
    for sql in [
        "DELETE FROM _rideshare_meta",
        "DROP TABLE _rideshare_idempotency",
        "PRAGMA foreign_keys = OFF",
        "BEGIN",
        "COMMIT",
        "ATTACH 'x.db' AS x",
        "CREATE TEMP TABLE x (a)",
    ] {
        let out = m
            .execute_batch(1, &[write(sql, vec![st(sql, vec![])])])
            .unwrap();
        assert!(
            matches!(&out.outcomes[0], Outcome::Rejected(_)),
            "{sql}: {:?}",
            out.outcomes
        );
        assert!(out.entries.is_empty(), "{sql}");
    }
    assert_eq!(m.position(), (0, 0));
}

#[test]
fn a_table_without_a_primary_key_is_replicated_as_statements() {
    let (_d, mut m, mut s) = pair();
    replicate(
        &mut m,
        &mut s,
        &[write("a", vec![st("CREATE TABLE nopk (a, b)", vec![])])],
    );
    let res = m
        .execute_batch(
            1,
            &[write(
                "b",
                vec![st("INSERT INTO nopk VALUES (1, 2)", vec![])],
            )],
        )
        .unwrap();
    assert!(matches!(res.entries[0].payload, Payload::Statements { .. }));
    s.apply(&res.entries[0]).unwrap();
    assert_eq!(m.dump().unwrap(), s.dump().unwrap());
}

#[test]
fn an_entry_after_a_gap_is_not_applied_and_a_redelivery_is_ignored() {
    let (_d, mut m, mut s) = pair();
    let a = m
        .execute_batch(1, &[write("a", vec![st(SCHEMA, vec![])])])
        .unwrap();
    let b = m
        .execute_batch(
            1,
            &[write(
                "b",
                vec![st("INSERT INTO t (name) VALUES ('x')", vec![])],
            )],
        )
        .unwrap();
    assert_eq!(
        s.apply(&b.entries[0]).unwrap(),
        Applied::Gap { expected: 1 }
    );
    assert_eq!(s.apply(&a.entries[0]).unwrap(), Applied::Applied);
    assert_eq!(s.apply(&a.entries[0]).unwrap(), Applied::AlreadyApplied);
    assert_eq!(s.apply(&b.entries[0]).unwrap(), Applied::Applied);
    assert_eq!(m.dump().unwrap(), s.dump().unwrap());
}

#[test]
fn a_diverged_replica_refuses_a_changeset_and_stays_unchanged() {
    let (_d, mut m, mut s) = pair();
    replicate(&mut m, &mut s, &[write("a", vec![st(SCHEMA, vec![])])]);
    replicate(
        &mut m,
        &mut s,
        &[write(
            "b",
            vec![st("INSERT INTO t (name) VALUES ('x')", vec![])],
        )],
    );
    s.conn.execute("UPDATE t SET n = 99", []).unwrap();
    let before = s.dump().unwrap();
    let res = m
        .execute_batch(1, &[write("c", vec![st("UPDATE t SET n = 5", vec![])])])
        .unwrap();
    assert!(s.apply(&res.entries[0]).is_err());
    assert_eq!(s.dump().unwrap(), before);
    assert_eq!(s.position().1, 2);
}

#[test]
fn cascades_run_on_the_master_and_arrive_as_row_changes() {
    let (_d, mut m, mut s) = pair();
    replicate(
        &mut m,
        &mut s,
        &[write(
            "schema",
            vec![
                st("CREATE TABLE p (id INTEGER PRIMARY KEY)", vec![]),
                st("CREATE TABLE c (id INTEGER PRIMARY KEY, p INTEGER REFERENCES p(id) ON DELETE CASCADE)", vec![]),
            ],
        )],
    );
    replicate(
        &mut m,
        &mut s,
        &[write(
            "rows",
            vec![
                st("INSERT INTO p VALUES (1)", vec![]),
                st("INSERT INTO c VALUES (1, 1), (2, 1)", vec![]),
            ],
        )],
    );
    replicate(
        &mut m,
        &mut s,
        &[write("del", vec![st("DELETE FROM p", vec![])])],
    );
    assert_eq!(m.dump().unwrap(), s.dump().unwrap());
    assert!(!s.dump().unwrap().contains("[1,1]"));
}

#[test]
fn clear_empties_every_user_table_but_keeps_ids_growing() {
    let (_d, mut m, mut s) = pair();
    replicate(&mut m, &mut s, &[write("a", vec![st(SCHEMA, vec![])])]);
    replicate(
        &mut m,
        &mut s,
        &[write(
            "b",
            vec![st("INSERT INTO t (name) VALUES ('x')", vec![])],
        )],
    );
    let out = replicate(&mut m, &mut s, &[Job::Clear { key: "c".into() }]);
    assert!(matches!(out[0], Outcome::Applied(_)));
    let out = replicate(
        &mut m,
        &mut s,
        &[write(
            "d",
            vec![st("INSERT INTO t (name) VALUES ('y')", vec![])],
        )],
    );
    let Outcome::Applied(r) = &out[0] else {
        panic!()
    };
    assert_eq!(r.results[0].last_insert_id, 2);
    assert_eq!(m.dump().unwrap(), s.dump().unwrap());
}

#[test]
fn a_snapshot_installs_as_an_identical_replica_at_the_same_position() {
    let (d, mut m, mut s) = pair();
    replicate(&mut m, &mut s, &[write("a", vec![st(SCHEMA, vec![])])]);
    replicate(
        &mut m,
        &mut s,
        &[write(
            "b",
            vec![st("INSERT INTO t (name) VALUES ('x')", vec![])],
        )],
    );
    let snap = m.snapshot().unwrap();
    let mut fresh = Db::install_snapshot(&d.path().join("new/db.sqlite"), &snap).unwrap();
    assert_eq!(fresh.position(), m.position());
    assert_eq!(fresh.dump().unwrap(), m.dump().unwrap());
    let res = m
        .execute_batch(
            1,
            &[write(
                "c",
                vec![st("INSERT INTO t (name) VALUES ('y')", vec![])],
            )],
        )
        .unwrap();
    fresh.apply(&res.entries[0]).unwrap();
    assert_eq!(fresh.dump().unwrap(), m.dump().unwrap());
}

#[test]
fn reads_refuse_statements_that_write() {
    let (_d, mut m, mut s) = pair();
    replicate(&mut m, &mut s, &[write("a", vec![st(SCHEMA, vec![])])]);
    let conn = open_reader(s.path()).unwrap();
    for sql in [
        "DELETE FROM t",
        "INSERT INTO t (name) VALUES ('x')",
        "DROP TABLE t",
        "SELECT * FROM nope",
        "SELEC 1",
    ] {
        assert!(
            read(
                &conn,
                &ReadRequest {
                    sql: sql.into(),
                    params: vec![]
                }
            )
            .is_err(),
            "{sql}"
        );
    }
    assert!(read(
        &conn,
        &ReadRequest {
            sql: "SELECT ?".into(),
            params: vec![]
        }
    )
    .is_err());
}

/// One random write for the property test: inserts, updates, deletes and failing statements on two related
/// tables, one to three statements per write.
fn arb_statement() -> impl Strategy<Value = Statement> {
    prop_oneof![
        (0..20i64, "[a-c]{1,2}").prop_map(|(n, s)| st(
            "INSERT INTO t (name, n) VALUES (?, ?)",
            vec![Value::Text(s), Value::Integer(n)]
        )),
        (0..20i64, 0..20i64).prop_map(|(a, b)| st(
            "UPDATE t SET n = ? WHERE n = ?",
            vec![Value::Integer(a), Value::Integer(b)]
        )),
        (0..20i64).prop_map(|a| st("DELETE FROM t WHERE n = ?", vec![Value::Integer(a)])),
        (0..20i64, 0..30i64).prop_map(|(t, x)| st(
            "INSERT INTO u (t_id, x) VALUES (?, ?)",
            vec![Value::Integer(t), Value::Integer(x)]
        )),
        (0..30i64).prop_map(|x| st("DELETE FROM u WHERE x = ?", vec![Value::Integer(x)])),
        Just(st("INSERT INTO missing VALUES (1)", vec![])),
        Just(st(
            "UPDATE t SET name = NULL WHERE id = (SELECT min(id) FROM t)",
            vec![]
        )),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn applying_the_log_on_a_replica_gives_the_masters_database(
        batches in prop::collection::vec(prop::collection::vec(prop::collection::vec(arb_statement(), 1..4), 1..6), 1..8)
    ) {
        let (_d, mut m, mut s) = pair();
        replicate(&mut m, &mut s, &[write("schema", vec![
            st(SCHEMA, vec![]),
            st("CREATE TABLE u (id INTEGER PRIMARY KEY, t_id INTEGER REFERENCES t(id) ON DELETE CASCADE, x INTEGER)", vec![]),
        ])]);
        let mut k = 0;
        let mut applied = 0;
        for batch in batches {
            let jobs: Vec<Job> = batch.into_iter().map(|sts| { k += 1; write(&k.to_string(), sts) }).collect();
            let outcomes = replicate(&mut m, &mut s, &jobs);
            applied += outcomes.iter().filter(|o| matches!(o, Outcome::Applied(_))).count();
        }
        // The log carried the schema entry plus at least one entry for every batch that applied anything.
        prop_assert!(m.position().1 > u64::from(applied > 0));
        prop_assert_eq!(m.dump().unwrap(), s.dump().unwrap());
        prop_assert_eq!(m.position(), s.position());
    }
}

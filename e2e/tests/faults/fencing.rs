//! Fencing: a master that was paused past its session timeout and replaced cannot get anything applied or
//! acknowledged when it wakes up, and steps down.

use std::time::Duration;

use e2e::{st, Cluster};
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use protocol::queue::{Command, CommandReply, KeyedWrite};
use protocol::Value;

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_master_that_was_replaced_cannot_apply_or_acknowledge_a_write_and_steps_down() {
    let c = Cluster::start(2).await;
    c.write_ok(vec![st(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
        vec![],
    )])
    .await;
    c.write_ok(vec![st("INSERT INTO t (v) VALUES ('before')", vec![])])
        .await;
    let old = c.view().master.expect("master");

    // A client of our own, to hand the paused master a write and watch for its answer.
    let conn = broker::connect(e2e::AMQP_URL, "e2e-fencing", broker::CONNECT_TIMEOUT)
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let replies = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    let mut answers = broker::consume_and_forward(&ch, replies.name().as_str(), no_ack)
        .await
        .unwrap();

    signal(old.pid, "-STOP");
    // Delivered at once to the only consumer, the paused master. It expires long before the old master's
    // connection could hand it back, so only the paused master could ever apply it.
    let zombie = Command::Writes {
        writes: vec![KeyedWrite {
            key: "zombie".into(),
            statements: vec![st("INSERT INTO t (v) VALUES ('zombie')", vec![])],
        }],
    };
    ch.basic_publish(
        "".into(),
        c.names.write_queue().as_str().into(),
        BasicPublishOptions::default(),
        &serde_json::to_vec(&zombie).unwrap(),
        lapin::BasicProperties::default()
            .with_reply_to(replies.name().clone())
            .with_correlation_id("zombie".into())
            .with_expiration("3000".into()),
    )
    .await
    .unwrap();

    // The paused master's session expires; a slave takes over and writes go on.
    c.wait_for(|v| v.master.as_ref().is_some_and(|m| m.id != old.id))
        .await;
    c.wait_for(|v| !v.in_sync_members().is_empty()).await;
    c.write_ok(vec![st("INSERT INTO t (v) VALUES ('after')", vec![])])
        .await;

    signal(old.pid, "-CONT");
    let deadline = tokio::time::Instant::now() + e2e::SETTLE;
    while e2e::is_running(old.pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the deposed master {} is still running",
            old.pid
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing answered the zombie write with success.
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(500), answers.recv()).await {
        let reply: CommandReply = serde_json::from_slice(&d.data).unwrap();
        let CommandReply::Batch { replies } = &reply else {
            panic!("not an answer to a batch of writes: {reply:?}")
        };
        assert!(
            !replies
                .iter()
                .any(|r| matches!(r, CommandReply::Written(_))),
            "the deposed master acknowledged: {reply:?}"
        );
    }
    // And it was applied nowhere that counts: not on the new master, not on any slave.
    c.write_ok(vec![st("INSERT INTO t (v) VALUES ('last')", vec![])])
        .await;
    let rows = c.read_ok("SELECT v FROM t ORDER BY id", vec![]).await;
    let values: Vec<Value> = rows.rows.into_iter().map(|mut r| r.remove(0)).collect();
    assert_eq!(
        values,
        ["before", "after", "last"].map(|v| Value::Text(v.into()))
    );
    let new_master = c.master_id();
    for id in c.live_ids().await {
        if id != old.id {
            assert!(
                !c.dump(&id).contains("zombie"),
                "worker {id} (master {new_master}) applied the zombie write"
            );
        }
    }
    conn.close(200, "done".into()).await.ok();
    c.stop().await;
}

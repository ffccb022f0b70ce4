use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use protocol::Names;

use crate::helpers::{Space, AMQP_URL, SETTLE};

#[tokio::test]
async fn declaring_a_namespace_twice_changes_nothing_and_its_queues_are_durable() {
    let space = Space::new().await;
    broker::declare(&space.connection, &space.names)
        .await
        .expect("a second declaration with the same options");
    // A passive declaration of a durable queue with `durable: false` would fail: ask for exactly what exists.
    let channel = space.connection.create_channel().await.unwrap();
    for queue in [space.names.write_queue(), space.names.read_queue()] {
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("{queue} is not as declared: {e}"));
    }
    space.delete().await;
}

#[tokio::test]
async fn deleting_a_namespace_removes_its_queues() {
    let space = Space::new().await;
    let names: Names = space.names.clone();
    space.delete().await;
    let connection = broker::connect(AMQP_URL, "broker-test", SETTLE)
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let found = channel
        .queue_declare(
            names.write_queue().as_str().into(),
            passive,
            FieldTable::default(),
        )
        .await;
    assert!(found.is_err(), "the write queue survived its deletion");
    let _ = connection.close(200, "done".into()).await;
}

#[tokio::test]
async fn connecting_to_a_port_where_no_broker_listens_fails_instead_of_hanging() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let url = format!("amqp://127.0.0.1:{port}/%2f");
    let started = std::time::Instant::now();
    let connected = broker::connect(&url, "nowhere", SETTLE).await;
    assert!(connected.is_err());
    assert!(started.elapsed() < SETTLE, "it waited out its timeout");
}

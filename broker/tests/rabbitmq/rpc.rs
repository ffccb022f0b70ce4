use std::time::Duration;

use broker::{ReconnectingRpc, RpcChannel, RpcError};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions};
use lapin::BasicProperties;

use crate::helpers::{Space, AMQP_URL, SETTLE};

#[tokio::test]
async fn a_call_gets_the_reply_to_its_own_request() {
    let space = Space::new().await;
    let _responder = space.responder(space.names.write_queue()).await;
    let rpc = RpcChannel::open(&space.connection).await.unwrap();
    let queue = space.names.write_queue();
    let (one, two) = tokio::join!(
        rpc.call(&queue, b"abc", SETTLE),
        rpc.call(&queue, b"xyz", SETTLE)
    );
    assert_eq!(one.unwrap(), b"cba");
    assert_eq!(two.unwrap(), b"zyx");
    space.delete().await;
}

#[tokio::test]
async fn the_request_ids_a_call_is_made_for_reach_the_side_that_answers() {
    let space = Space::new().await;
    let _responder = space.responder(space.names.read_queue()).await;
    let (rpc, _task) = ReconnectingRpc::start(AMQP_URL, &space.names, "broker-test-ids")
        .await
        .unwrap();
    let queue = space.names.read_queue();
    let reply = rpc.call_for(&queue, b"abc", "r-1 r-2", SETTLE).await;
    assert_eq!(reply.unwrap(), b"cba|r-1 r-2");
    let reply = rpc.call(&queue, b"abc", SETTLE).await;
    assert_eq!(reply.unwrap(), b"cba", "a call for no request names none");
    rpc.close();
    space.delete().await;
}

#[tokio::test]
async fn a_call_nobody_answers_times_out() {
    let space = Space::new().await;
    let rpc = RpcChannel::open(&space.connection).await.unwrap();
    let err = rpc
        .call(
            &space.names.read_queue(),
            b"anyone?",
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::TimedOut(_)), "{err:?}");
    space.delete().await;
}

#[tokio::test]
async fn a_waiting_call_and_every_later_one_fail_when_the_channel_closes() {
    let space = Space::new().await;
    let rpc = RpcChannel::open(&space.connection).await.unwrap();
    let queue = space.names.read_queue();
    // Sees the request arrive, and never answers it.
    let watcher = space.connection.create_channel().await.unwrap();
    let mut requests = broker::consume_and_forward(
        &watcher,
        &queue,
        BasicConsumeOptions {
            no_ack: true,
            ..BasicConsumeOptions::default()
        },
    )
    .await
    .unwrap();
    let waiting = tokio::spawn({
        let rpc = rpc.clone();
        async move { rpc.call(&queue, b"anyone?", SETTLE).await }
    });
    tokio::time::timeout(SETTLE, requests.recv())
        .await
        .expect("the request is published")
        .expect("the watcher consumes");
    rpc.channel().close(200, "test".into()).await.unwrap();
    tokio::time::timeout(SETTLE, rpc.closed())
        .await
        .expect("the end of the channel is noticed");
    let err = waiting.await.unwrap().unwrap_err();
    assert!(matches!(err, RpcError::Closed), "{err:?}");
    let err = rpc
        .call(&space.names.read_queue(), b"again", SETTLE)
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::Closed), "{err:?}");
    space.delete().await;
}

#[tokio::test]
async fn forwarded_deliveries_arrive_in_order_and_end_with_their_consumer() {
    let space = Space::new().await;
    let channel = space.connection.create_channel().await.unwrap();
    let queue = space.names.read_queue();
    let mut deliveries =
        broker::consume_and_forward(&channel, &queue, BasicConsumeOptions::default())
            .await
            .unwrap();
    for body in [b"1", b"2", b"3"] {
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    for expected in [b"1", b"2", b"3"] {
        let delivery = tokio::time::timeout(SETTLE, deliveries.recv())
            .await
            .expect("a delivery in time")
            .expect("the consumer runs");
        assert_eq!(delivery.data, expected);
        delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    channel.close(200, "test".into()).await.unwrap();
    let end = tokio::time::timeout(SETTLE, deliveries.recv())
        .await
        .expect("the end in time");
    assert!(end.is_none(), "a delivery after the channel closed");
    space.delete().await;
}

#[tokio::test]
async fn the_reconnecting_client_calls_while_connected_and_refuses_once_closed() {
    let space = Space::new().await;
    let _responder = space.responder(space.names.write_queue()).await;
    let (rpc, task) = ReconnectingRpc::start(AMQP_URL, &space.names, "broker-test-client")
        .await
        .unwrap();
    assert!(rpc.is_connected());
    let reply = rpc.call(&space.names.write_queue(), b"ab", SETTLE).await;
    assert_eq!(reply.unwrap(), b"ba");
    rpc.close();
    tokio::time::timeout(SETTLE, task)
        .await
        .expect("the connection task ends once closed")
        .unwrap();
    let err = rpc
        .call(&space.names.write_queue(), b"ab", SETTLE)
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::Disconnected), "{err:?}");
    space.delete().await;
}

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use lapin::Connection;
use protocol::Names;
use tokio_util::task::AbortOnDropHandle;

pub const AMQP_URL: &str = "amqp://127.0.0.1:5672/%2f";

/// A long enough wait for anything the broker does on this machine, loaded or not.
pub const SETTLE: Duration = Duration::from_secs(10);

/// A fresh namespace on the shared broker, its queues and exchange declared; deleted by [`Space::delete`].
pub struct Space {
    pub names: Names,
    pub connection: Connection,
}

impl Space {
    pub async fn new() -> Self {
        let names = Names::new(&format!(
            "b{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        let connection = broker::connect(AMQP_URL, "broker-test", broker::CONNECT_TIMEOUT)
            .await
            .expect("RabbitMQ runs on 127.0.0.1:5672");
        broker::declare(&connection, &names)
            .await
            .expect("declaring");
        Self { names, connection }
    }

    pub async fn delete(self) {
        broker::delete(&self.connection, &self.names).await;
        let _ = self.connection.close(200, "done".into()).await;
    }

    /// A worker of sorts: answers every request on `queue` with its body reversed (followed by `|` and the
    /// request ids the message names, if it names any), on a connection of its own
    /// (so a test may close the caller's without stopping it). Stops when dropped.
    pub async fn responder(&self, queue: String) -> AbortOnDropHandle<()> {
        let connection = broker::connect(AMQP_URL, "broker-test-responder", SETTLE)
            .await
            .expect("connecting");
        let channel = connection.create_channel().await.expect("a channel");
        let mut requests = channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consuming");
        AbortOnDropHandle::new(tokio::spawn(async move {
            let _connection = connection;
            while let Some(Ok(request)) = requests.next().await {
                let reply_to = request.properties.reply_to().clone().expect("reply_to");
                let id = request.properties.correlation_id().clone();
                let mut body = request.data.clone();
                body.reverse();
                let ids = broker::request_ids(&request.properties);
                if !ids.is_empty() {
                    body.extend_from_slice(format!("|{ids}").as_bytes());
                }
                broker::reply(
                    &channel,
                    reply_to.as_str(),
                    id.as_ref().map(|id| id.as_str()),
                    &body,
                )
                .await
                .expect("replying");
                request
                    .ack(BasicAckOptions::default())
                    .await
                    .expect("acknowledging");
            }
        }))
    }
}

//! Consumers read through an mpsc channel, so that a loop can `select!` on deliveries beside its other events
//! and tell a consumer that ended (`None`) from one that is merely quiet.

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use tokio::sync::mpsc;

/// Consumes `queue` on `channel` (the broker names the consumer) and forwards its deliveries; see [`forward`].
pub async fn consume_and_forward(
    channel: &Channel,
    queue: &str,
    options: BasicConsumeOptions,
) -> lapin::Result<mpsc::UnboundedReceiver<Delivery>> {
    let consumer = channel
        .basic_consume(queue.into(), "".into(), options, FieldTable::default())
        .await?;
    Ok(forward(consumer))
}

/// Forwards every delivery of `consumer` into the returned channel, from a task that ends when the consumer
/// ends (its channel or connection closed: the receiver then yields `None`) or when the receiver is dropped.
///
/// Unbounded because the broker already bounds what it hands a consumer that acknowledges (the channel's
/// prefetch), and a consumer without acknowledgements (replies, the sync fanout) must not stall its channel.
pub fn forward(mut consumer: Consumer) -> mpsc::UnboundedReceiver<Delivery> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tx.closed() => return,
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        if tx.send(delivery).is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        // The owner learns of it from the end of the channel; why is only worth a debug line
                        // (a closed connection ends every consumer on it).
                        tracing::debug!("consumer ended: {e}");
                        return;
                    }
                    None => return,
                },
            }
        }
    });
    rx
}

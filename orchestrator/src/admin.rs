//! Housekeeping of a namespace on a shared RabbitMQ and ZooKeeper, for tools and tests that create clusters of
//! their own (a production cluster keeps its namespace for life).

use std::time::Duration;

use futures::future::BoxFuture;
use protocol::Names;

/// Deletes what a cluster leaves behind once its workers are gone: its durable queues (`writeQ`, `readQ`), its
/// sync exchange and its znodes. Best effort: each step that fails is skipped (the state may be partly gone
/// already), and the whole gives up after `timeout`.
pub async fn purge_namespace(amqp_url: &str, zk: &str, names: &Names, timeout: Duration) {
    let _ = tokio::time::timeout(timeout, async {
        if let Ok(connection) = broker::connect(amqp_url, "purge", timeout).await {
            broker::delete(&connection, names).await;
            let _ = connection.close(200, "purged".into()).await;
        }
        if let Ok(zk) = zookeeper_client::Client::connect(zk).await {
            delete_tree(&zk, names.zk_root()).await;
        }
    })
    .await;
}

/// Deletes a znode and everything below it.
fn delete_tree(zk: &zookeeper_client::Client, path: String) -> BoxFuture<'_, ()> {
    Box::pin(async move {
        if let Ok(children) = zk.list_children(&path).await {
            for child in children {
                delete_tree(zk, format!("{path}/{child}")).await;
            }
        }
        let _ = zk.delete(&path, None).await;
    })
}

//! Gathering concurrent requests into one broker message.
//!
//! Under load the broker, not SQLite, is what limits throughput: every request costs a publish, a delivery, an
//! acknowledgement and a reply. A [`Batcher`] keeps a few batches in flight per queue; requests that arrive while
//! they are all out wait and leave together in the next one. With one client nothing waits (a batch of one
//! leaves at once), with many the batches grow by themselves: no timer, no added latency when idle.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use protocol::queue::{Command, CommandReply, KeyedWrite, ReadBatch, ReadBatchReply, ReadReply};
use protocol::ReadRequest;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

use crate::error::Error;
use crate::rpc::{Rpc, RpcError};

/// How requests of one kind travel together.
pub trait BatchKind: Send + Sync + 'static {
    /// The `kind` label of this kind's metrics.
    const NAME: &'static str;
    type Item: Send + 'static;
    type Reply: Clone + Send + 'static;
    fn encode(&self, items: Vec<Self::Item>) -> serde_json::Result<Vec<u8>>;
    /// The replies, one per item, in order.
    fn decode(&self, body: &[u8], items: usize) -> Result<Vec<Self::Reply>, String>;
    /// When a batch without an answer this long is sent again (and again after twice as long, and so on), the
    /// first answer of any copy counting; `None`: one copy only.
    fn hedge_after(&self) -> Option<Duration> {
        None
    }
}

/// When an unanswered read batch is sent again. A read takes milliseconds (p99 about 15 ms at 64 clients),
/// or up to a write round while it waits for the commit point; a batch still out after this long most likely
/// sits with a slave that cannot answer: one cut off from the network still holds the batches RabbitMQ
/// delivered to it (up to its prefetch) until the broker notices the dead connection. Without a second copy,
/// such a batch waits out its whole attempt (5 s), holding one of the few batch slots all reads share.
const READ_HEDGE_AFTER: Duration = Duration::from_millis(250);

/// Reads: a `ReadBatch` on `readQ`, answered by one slave with a `ReadBatchReply`. Nothing is kept between
/// batches: a slave shows only committed data, under a lease, so reads never go back in time without the
/// orchestrator remembering what earlier ones saw (which would not survive its restart).
#[derive(Default)]
pub struct Reads;

impl BatchKind for Reads {
    const NAME: &'static str = "read";
    type Item = ReadRequest;
    type Reply = ReadReply;

    fn encode(&self, reads: Vec<ReadRequest>) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&ReadBatch { reads })
    }

    fn decode(&self, body: &[u8], items: usize) -> Result<Vec<ReadReply>, String> {
        let reply: ReadBatchReply = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        if reply.replies.len() != items {
            return Err(format!("{} replies to {items} reads", reply.replies.len()));
        }
        Ok(reply.replies)
    }

    /// Reads may be sent twice: a read changes nothing, and each copy's answer alone is linearizable within
    /// the request's span (a slave answers only under its lease and from committed data), so whichever comes
    /// first will do.
    fn hedge_after(&self) -> Option<Duration> {
        Some(READ_HEDGE_AFTER)
    }
}

/// Writes: a `Command::Writes` on `writeQ`, answered by the master with a `CommandReply::Batch`. Each write
/// keeps its own transaction and idempotency key.
pub struct Writes;

impl BatchKind for Writes {
    const NAME: &'static str = "write";
    type Item = KeyedWrite;
    type Reply = CommandReply;

    fn encode(&self, writes: Vec<KeyedWrite>) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&Command::Writes { writes })
    }

    fn decode(&self, body: &[u8], items: usize) -> Result<Vec<CommandReply>, String> {
        match serde_json::from_slice(body).map_err(|e| e.to_string())? {
            CommandReply::Batch { replies } if replies.len() == items => Ok(replies),
            CommandReply::Batch { replies } => {
                Err(format!("{} replies to {items} writes", replies.len()))
            }
            // A refusal of the whole message (say, an old worker) answers every write in it.
            other => Ok(vec![other; items]),
        }
    }
}

struct Pending<K: BatchKind> {
    item: K::Item,
    /// The `X-Request-Id` of the HTTP request waiting for this item, if any.
    request_id: Option<String>,
    deadline: Instant,
    answer: oneshot::Sender<Result<K::Reply, Error>>,
}

/// Sends requests of one kind to one queue, in batches. Cheap to clone.
pub struct Batcher<K: BatchKind> {
    queue: mpsc::UnboundedSender<Pending<K>>,
    kind: Arc<K>,
}

impl<K: BatchKind> Clone for Batcher<K> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            kind: self.kind.clone(),
        }
    }
}

impl<K: BatchKind> Batcher<K> {
    /// `max_in_flight`: batches out at once (more means more parallel slaves busy, and smaller batches);
    /// `max_batch`: requests in one message at most.
    pub fn start(
        kind: K,
        rpc: Arc<dyn Rpc>,
        queue: String,
        max_in_flight: usize,
        max_batch: usize,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let kind = Arc::new(kind);
        tokio::spawn(gather::<K>(
            kind.clone(),
            rpc,
            queue,
            rx,
            max_in_flight.max(1),
            max_batch.max(1),
        ));
        Self { queue: tx, kind }
    }

    pub fn kind(&self) -> &K {
        &self.kind
    }

    /// Sends one request with the others waiting, and returns its reply; gives up after `timeout`.
    pub async fn call(&self, item: K::Item, timeout: Duration) -> Result<K::Reply, Error> {
        let (answer, reply) = oneshot::channel();
        let deadline = Instant::now() + timeout;
        self.queue
            .send(Pending {
                item,
                request_id: telemetry::request_id::current(),
                deadline,
                answer,
            })
            .map_err(|_| Error::Unavailable(anyhow::anyhow!("the batcher has stopped")))?;
        match tokio::time::timeout_at(deadline, reply).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Unavailable(anyhow::anyhow!("the batch was dropped"))),
            Err(_) => Err(Error::Unavailable(anyhow::anyhow!(
                "no reply within {timeout:?}"
            ))),
        }
    }
}

async fn gather<K: BatchKind>(
    kind: Arc<K>,
    rpc: Arc<dyn Rpc>,
    queue: String,
    mut rx: mpsc::UnboundedReceiver<Pending<K>>,
    max_in_flight: usize,
    max_batch: usize,
) {
    let slots = Arc::new(Semaphore::new(max_in_flight));
    while let Some(first) = rx.recv().await {
        // Waiting for a free slot is what lets a batch grow: requests pile up meanwhile.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        // Callers that already gave up are not sent.
        batch.retain(|p| !p.answer.is_closed() && p.deadline > Instant::now());
        if batch.is_empty() {
            continue;
        }
        let (kind, rpc, queue) = (kind.clone(), rpc.clone(), queue.clone());
        tokio::spawn(async move {
            send::<K>(&*kind, &*rpc, &queue, batch).await;
            drop(slot);
        });
    }
}

async fn send<K: BatchKind>(kind: &K, rpc: &dyn Rpc, queue: &str, batch: Vec<Pending<K>>) {
    let deadline = batch
        .iter()
        .map(|p| p.deadline)
        .max()
        .expect("a non-empty batch");
    let timeout = deadline.saturating_duration_since(Instant::now());
    // For the worker's log lines: which HTTP requests this message serves (ids hold no space).
    let request_ids = batch
        .iter()
        .filter_map(|p| p.request_id.as_deref())
        .collect::<Vec<_>>()
        .join(" ");
    let (items, answers): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.item, p.answer)).unzip();
    let n = items.len();
    metrics::histogram!("rideshare_batch_size", "kind" => K::NAME).record(n as f64);
    let started = Instant::now();
    let message = Message {
        queue,
        request_ids: &request_ids,
        timeout,
    };
    let result = match kind.encode(items) {
        Err(e) => Err(Error::Internal(anyhow::anyhow!("encoding a batch: {e}"))),
        Ok(body) => match call_hedged::<K>(rpc, &message, body, kind.hedge_after()).await {
            Err(e) => Err(Error::Unavailable(anyhow::anyhow!(
                "request on {queue}: {e}"
            ))),
            Ok(reply) => kind
                .decode(&reply, n)
                .map_err(|e| Error::Internal(anyhow::anyhow!("unreadable reply on {queue}: {e}"))),
        },
    };
    let outcome = if result.is_ok() { "answered" } else { "failed" };
    metrics::histogram!("rideshare_batch_seconds", "kind" => K::NAME, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    match result {
        Ok(replies) => {
            for (answer, reply) in answers.into_iter().zip(replies) {
                let _ = answer.send(Ok(reply));
            }
        }
        Err(e) => {
            let shared = e.to_string();
            for answer in answers {
                let _ = answer.send(Err(match &e {
                    Error::Internal(_) => Error::Internal(anyhow::anyhow!("{shared}")),
                    _ => Error::Unavailable(anyhow::anyhow!("{shared}")),
                }));
            }
        }
    }
}

/// Where a batch goes and for whom.
struct Message<'a> {
    queue: &'a str,
    /// The batch's requests' ids, space-separated (see [`Rpc::call`]).
    request_ids: &'a str,
    timeout: Duration,
}

/// Sends `body`, and again each time `hedge` (doubling) passes without an answer, until the message's timeout;
/// returns the first answer. A copy's failure ends the call only when no other copy is out.
async fn call_hedged<K: BatchKind>(
    rpc: &dyn Rpc,
    message: &Message<'_>,
    body: Vec<u8>,
    hedge: Option<Duration>,
) -> Result<Vec<u8>, RpcError> {
    let Message {
        queue,
        request_ids,
        timeout,
    } = *message;
    let Some(mut wait) = hedge else {
        return rpc.call(queue, &body, request_ids, timeout).await;
    };
    let deadline = Instant::now() + timeout;
    let mut out = FuturesUnordered::new();
    out.push(rpc.call(queue, &body, request_ids, timeout));
    let mut next = Instant::now() + wait;
    loop {
        tokio::select! {
            Some(result) = out.next() => match result {
                Ok(reply) => return Ok(reply),
                Err(e) if out.is_empty() => return Err(e),
                Err(e) => tracing::debug!("a copy of a request on {queue} failed: {e}"),
            },
            () = tokio::time::sleep_until(next), if next < deadline => {
                tracing::debug!(request_ids, "no answer on {queue} after {wait:?}: sending the request again");
                metrics::counter!("rideshare_batch_copies_total", "kind" => K::NAME).increment(1);
                let left = deadline.saturating_duration_since(Instant::now());
                out.push(rpc.call(queue, &body, request_ids, left));
                wait *= 2;
                next += wait;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::future::BoxFuture;
    use protocol::queue::ReadPosition;
    use protocol::ReadResponse;

    use super::*;

    /// Slaves behind `readQ`, in paused time (a pause passes as soon as every task waits). The first
    /// `silent` copies sent are never answered: each waits out its timeout, as a delivery held by a slave cut
    /// off from the network does. The rest are answered after `delay`, each read's SQL echoed back as its one
    /// column. Remembers how many copies were sent and the size of every batch answered.
    struct Slaves {
        silent: usize,
        delay: Duration,
        sent: Mutex<usize>,
        batches: Mutex<Vec<usize>>,
        /// The request ids each copy named.
        request_ids: Mutex<Vec<String>>,
    }

    impl Slaves {
        fn new(silent: usize, delay: Duration) -> Arc<Self> {
            Arc::new(Self {
                silent,
                delay,
                sent: Mutex::new(0),
                batches: Mutex::default(),
                request_ids: Mutex::default(),
            })
        }

        /// Slaves that answer every batch after 50 ms.
        fn slow() -> Arc<Self> {
            Self::new(0, Duration::from_millis(50))
        }

        fn sent(&self) -> usize {
            *self.sent.lock().unwrap()
        }

        fn batches(&self) -> Vec<usize> {
            self.batches.lock().unwrap().clone()
        }
    }

    impl Rpc for Slaves {
        fn call<'a>(
            &'a self,
            _queue: &'a str,
            body: &'a [u8],
            request_ids: &'a str,
            timeout: Duration,
        ) -> BoxFuture<'a, Result<Vec<u8>, RpcError>> {
            self.request_ids
                .lock()
                .unwrap()
                .push(request_ids.to_owned());
            Box::pin(async move {
                let n = {
                    let mut sent = self.sent.lock().unwrap();
                    *sent += 1;
                    *sent
                };
                if n <= self.silent {
                    tokio::time::sleep(timeout).await;
                    return Err(RpcError::TimedOut(timeout));
                }
                let batch: ReadBatch = serde_json::from_slice(body).unwrap();
                self.batches.lock().unwrap().push(batch.reads.len());
                tokio::time::sleep(self.delay).await;
                let replies = batch
                    .reads
                    .into_iter()
                    .map(|r| {
                        ReadReply::Rows(ReadResponse {
                            columns: vec![r.sql],
                            rows: vec![],
                        })
                    })
                    .collect();
                Ok(serde_json::to_vec(&ReadBatchReply {
                    replies,
                    position: ReadPosition::default(),
                })
                .unwrap())
            })
        }
    }

    fn read(sql: &str) -> ReadRequest {
        ReadRequest {
            sql: sql.into(),
            params: vec![],
        }
    }

    #[tokio::test(start_paused = true)]
    async fn requests_that_wait_for_a_free_slot_leave_together_and_each_gets_its_own_answer() {
        let rpc = Slaves::slow();
        let batcher = Batcher::start(Reads, rpc.clone(), "q".into(), 1, 64);
        let calls = (0..10).map(|i| {
            let b = batcher.clone();
            async move { b.call(read(&format!("q{i}")), Duration::from_secs(5)).await }
        });
        let answers = futures::future::join_all(calls).await;
        for (i, answer) in answers.into_iter().enumerate() {
            match answer.unwrap() {
                ReadReply::Rows(r) => assert_eq!(r.columns, vec![format!("q{i}")]),
                other => panic!("{other:?}"),
            }
        }
        let batches = rpc.batches();
        assert_eq!(batches.iter().sum::<usize>(), 10);
        assert!(batches.len() <= 2, "ten waiting reads went in {batches:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_names_the_request_ids_of_its_requests_in_its_order() {
        let rpc = Slaves::slow();
        let batcher = Batcher::start(Reads, rpc.clone(), "q".into(), 1, 64);
        let calls = (0..6).map(|i| {
            let b = batcher.clone();
            let call = async move { b.call(read(&format!("q{i}")), Duration::from_secs(5)).await };
            telemetry::request_id::scope(format!("r{i}"), call)
        });
        for answer in futures::future::join_all(calls).await {
            answer.unwrap();
        }
        // And one read made outside any HTTP request: its batch names nobody.
        batcher
            .call(read("bare"), Duration::from_secs(5))
            .await
            .unwrap();
        let sent = rpc.request_ids.lock().unwrap().clone();
        let batches = rpc.batches();
        assert_eq!(sent.last().map(String::as_str), Some(""));
        let named: Vec<&str> = sent[..sent.len() - 1]
            .iter()
            .flat_map(|ids| ids.split(' '))
            .collect();
        assert_eq!(named, ["r0", "r1", "r2", "r3", "r4", "r5"]);
        // Each batch names exactly its own requests.
        for (ids, size) in sent.iter().zip(&batches).take(sent.len() - 1) {
            assert_eq!(ids.split(' ').count(), *size, "{sent:?} {batches:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_request_leaves_at_once_in_a_batch_of_one() {
        let rpc = Slaves::slow();
        let batcher = Batcher::start(Reads, rpc.clone(), "q".into(), 4, 64);
        batcher
            .call(read("only"), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(rpc.batches(), vec![1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_whose_time_ran_out_gets_503() {
        let rpc = Slaves::slow();
        let batcher = Batcher::start(Reads, rpc, "q".into(), 1, 64);
        let err = batcher
            .call(read("slow"), Duration::from_millis(5))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_batch_held_by_a_slave_that_cannot_answer_is_answered_by_a_copy() {
        let rpc = Slaves::new(1, Duration::from_millis(5));
        let batcher = Batcher::start(Reads, rpc.clone(), "q".into(), 1, 64);
        let start = Instant::now();
        let reply = batcher.call(read("x"), Duration::from_secs(5)).await;
        assert!(matches!(reply, Ok(ReadReply::Rows(_))), "{reply:?}");
        assert_eq!(rpc.sent(), 2);
        // The copy left after READ_HEDGE_AFTER and took 5 ms: the first copy's 5 s were not waited out.
        assert_eq!(start.elapsed(), READ_HEDGE_AFTER + Duration::from_millis(5));
        // The one batch slot is free again: the next read leaves at once.
        let start = Instant::now();
        batcher
            .call(read("y"), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(5));
    }

    #[tokio::test(start_paused = true)]
    async fn copies_of_an_unanswered_read_leave_at_doubling_intervals_until_its_time_runs_out() {
        let rpc = Slaves::new(usize::MAX, Duration::ZERO);
        let batcher = Batcher::start(Reads, rpc.clone(), "q".into(), 1, 64);
        let err = batcher
            .call(read("x"), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
        // At 0, 250 ms, 750 ms, 1.75 s and 3.75 s; the next would be at 7.75 s.
        assert_eq!(rpc.sent(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_batch_is_sent_once_however_long_it_waits() {
        let rpc = Slaves::new(usize::MAX, Duration::ZERO);
        let writes = Batcher::start(Writes, rpc.clone(), "q".into(), 1, 64);
        let write = KeyedWrite {
            key: "k".into(),
            statements: vec![],
        };
        let err = writes
            .call(write, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
        assert_eq!(rpc.sent(), 1);
    }

    #[test]
    fn a_read_batch_carries_its_reads_in_order_and_a_reply_of_another_length_is_refused() {
        let reads = Reads;
        let body = reads.encode(vec![read("a"), read("b")]).unwrap();
        let sent: ReadBatch = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            sent.reads
                .iter()
                .map(|r| r.sql.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        let reply = serde_json::to_vec(&ReadBatchReply {
            replies: vec![ReadReply::Rejected { error: "x".into() }],
            position: ReadPosition { epoch: 2, seq: 7 },
        })
        .unwrap();
        assert!(reads.decode(&reply, 1).is_ok());
        assert!(reads.decode(&reply, 2).is_err());
    }

    #[test]
    fn a_refusal_of_a_whole_write_batch_answers_every_write_in_it() {
        let body = serde_json::to_vec(&CommandReply::Rejected { error: "no".into() }).unwrap();
        let replies = Writes.decode(&body, 3).unwrap();
        assert_eq!(replies.len(), 3);
        let short = serde_json::to_vec(&CommandReply::Batch { replies: vec![] }).unwrap();
        assert!(Writes.decode(&short, 2).is_err());
    }
}

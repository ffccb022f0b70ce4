//! What an operator sees on `/console` while the master crashes: the page follows the failover and the
//! replacement by itself, without a reload.

use e2e::{st, Cluster};
use protocol::Value;

use crate::chrome::Browser;

/// The console's worker row for `role` with `pid` (and in sync when asked).
fn row(role: &str, pid: u32) -> String {
    format!(r#"#workers tbody tr[data-role="{role}"][data-pid="{pid}"]"#)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_follows_a_master_crash_through_the_failover_and_the_replacement_without_a_reload(
) {
    // The browser first: a machine without Chromium fails here, at once and saying so.
    let browser = Browser::start().await;
    let c = Cluster::start(1).await;
    // A write names the slave in sync to itself: it stands in the election from then on. Some reads and writes
    // give the charts something to draw when the orchestrator serves /metrics.
    c.write_ok(vec![st("CREATE TABLE t (x INTEGER)", vec![])])
        .await;
    for i in 0..5 {
        c.write_ok(vec![st(
            "INSERT INTO t VALUES (?)",
            vec![Value::Integer(i)],
        )])
        .await;
        c.read_ok("SELECT count(*) FROM t", vec![]).await;
    }
    let master = c.master_pid();
    let slave = c
        .view()
        .worker_infos()
        .iter()
        .find(|w| w.role == protocol::Role::Slave)
        .expect("a slave")
        .pid;

    browser.goto(&format!("{}/console", c.base)).await;
    browser
        .wait_for(&row("master", master), "the master's row")
        .await;
    browser
        .wait_for(
            &format!(r#"{}[data-in-sync="true"]"#, row("slave", slave)),
            "the slave's row, in sync",
        )
        .await;
    browser
        .wait_for(
            r#"#metrics-status[data-state="live"]"#,
            "the request charts, live from the orchestrator's /metrics",
        )
        .await;
    assert_eq!(
        browser.all("#workers tbody tr[data-role]").await.len(),
        2,
        "one master and one slave"
    );
    // The charts' arithmetic on known figures: 100 reads in two series (summed), 99th percentile in the bucket
    // (10 ms, 100 ms], interpolated as Prometheus does: 10 + 90 × 9/10 = 91 ms. Writes stay apart.
    let quantile = browser
        .eval(
            r#"
            const c = window.rideshareConsole;
            const text = [
              '# TYPE http_requests_total counter',
              'http_requests_total{method="POST",route="/api/v1/db/read",status="200"} 80',
              'http_requests_total{method="POST",route="/api/v1/db/read",status="400"} 20',
              'http_requests_total{method="POST",route="/api/v1/db/write",status="200"} 7',
              'http_request_duration_seconds_bucket{method="POST",route="/api/v1/db/read",status="200",le="0.01"} 70',
              'http_request_duration_seconds_bucket{method="POST",route="/api/v1/db/read",status="200",le="0.1"} 80',
              'http_request_duration_seconds_bucket{method="POST",route="/api/v1/db/read",status="200",le="+Inf"} 80',
              'http_request_duration_seconds_bucket{method="POST",route="/api/v1/db/read",status="400",le="0.01"} 20',
              'http_request_duration_seconds_bucket{method="POST",route="/api/v1/db/read",status="400",le="0.1"} 20',
              'http_request_duration_seconds_bucket{method="POST",route="/api/v1/db/read",status="400",le="+Inf"} 20',
              'http_request_duration_seconds_bucket{method="POST",route="/api/v1/db/write",status="200",le="+Inf"} 7',
            ].join('\n');
            const now = c.summarize(c.parseMetrics(text));
            const empty = c.summarize([]);
            return [now.read.count, now.write.count, c.p99(empty.read.buckets, now.read.buckets),
                    c.p99(now.read.buckets, now.read.buckets)];
            "#,
        )
        .await;
    let figures = quantile.as_array().expect("an array");
    assert_eq!(figures[0], 100.0, "{quantile}");
    assert_eq!(figures[1], 7.0, "{quantile}");
    let p99 = figures[2].as_f64().expect("a p99");
    assert!((p99 - 0.091).abs() < 1e-9, "p99 {p99}");
    assert!(figures[3].is_null(), "no requests in between: no p99");

    // Set in the page: still there at the end only if the page was never reloaded.
    browser
        .eval("window.consoleTestMark = 'before the crash'")
        .await;
    browser.screenshot("console-1-before").await;

    browser
        .client()
        .find(fantoccini::Locator::Css("#crash-master"))
        .await
        .expect("the Crash master button")
        .click()
        .await
        .expect("clicking Crash master");
    let answer = browser
        .wait_for(
            r#"#crash-result[data-state="ok"]"#,
            "the crash API's answer",
        )
        .await;
    let answer = answer.text().await.expect("the answer's text");
    assert!(
        answer.contains(&format!("killed pid {master}")),
        "the console shows the API's answer: {answer}"
    );
    browser.screenshot("console-2-crashed").await;

    browser
        .wait_for(
            &format!(r#"#workers tbody tr[data-role="master"]:not([data-pid="{master}"])"#),
            "a new master",
        )
        .await;
    let replacement = format!(
        r#"#workers tbody tr[data-role="slave"][data-in-sync="true"]:not([data-pid="{master}"]):not([data-pid="{slave}"])"#
    );
    browser
        .wait_for(&replacement, "a replacement slave in sync")
        .await;
    browser
        .wait_for(r#"#events li[data-kind="failover"]"#, "the failover event")
        .await;
    browser
        .wait_for(
            r#"#events li[data-kind="replacement"]"#,
            "the replacement event",
        )
        .await;
    browser
        .wait_for(r#"#events li[data-kind="crash"]"#, "the crash API event")
        .await;

    // What the page shows is the cluster's state, and it got there by itself. (Read in one script each: the
    // page redraws its rows at every poll, so an element found earlier may be gone.)
    let shown = browser
        .eval(
            r#"return document.querySelector('#workers tbody tr[data-role="master"]').dataset.pid"#,
        )
        .await;
    let shown: u32 = shown
        .as_str()
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("the master's row has no pid: {shown}"));
    assert_ne!(shown, master);
    let now = c.view();
    assert_eq!(
        Some(shown),
        now.master.as_ref().map(|m| m.pid),
        "the console shows the master ZooKeeper names"
    );
    assert_eq!(
        browser.all("#workers tbody tr[data-role]").await.len(),
        2,
        "one master and one slave again"
    );
    let reason = browser
        .eval(r#"return document.querySelector('#events li[data-kind="failover"]').textContent"#)
        .await;
    let reason = reason.as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!("pid {master}")) && reason.contains(&format!("pid {shown}")),
        "the failover names the old and the new master: {reason}"
    );
    assert_eq!(
        browser.eval("return window.consoleTestMark").await,
        serde_json::json!("before the crash"),
        "the page was reloaded"
    );
    let epoch = browser.all("#epochs tbody tr[data-epoch]").await.len();
    assert!(
        epoch >= 2,
        "the epoch history shows both epochs ({epoch} rows)"
    );
    // The charts follow the traffic: writes and reads now show as a rate from the orchestrator's /metrics.
    let deadline = tokio::time::Instant::now() + e2e::SETTLE;
    let mut i = 100;
    loop {
        c.write_ok(vec![st(
            "INSERT INTO t VALUES (?)",
            vec![Value::Integer(i)],
        )])
        .await;
        c.read_ok("SELECT count(*) FROM t", vec![]).await;
        i += 1;
        let shown = browser
            .eval("return document.getElementById('now-write').textContent")
            .await;
        let rate = shown
            .as_str()
            .and_then(|t| t.split(' ').next())
            .and_then(|n| n.parse::<f64>().ok());
        if rate.is_some_and(|r| r > 0.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the write rate never showed on the page: {shown}"
        );
    }
    browser.screenshot("console-3-after").await;

    // Narrow: nothing wider than the window (the tables scroll inside their cards).
    browser.resize((420, 2400)).await;
    let overflow = browser
        .eval("return document.documentElement.scrollWidth - window.innerWidth")
        .await;
    browser.screenshot("console-4-narrow").await;
    assert!(
        overflow.as_i64().is_some_and(|px| px <= 0),
        "the page is wider than a 420 px window by {overflow} px"
    );
    browser.close().await;
    c.stop().await;
}

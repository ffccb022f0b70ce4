//! The test bed for real: ZooKeeper and RabbitMQ started on hosts of their own, reached from the suite's side of
//! the bridge, killed and started again; a host's clock offset seen by a program started with its launcher.

use std::os::unix::fs::PermissionsExt;

use faultsuite::hosts::{can_create_hosts, Testbed};
use faultsuite::services::{self, HostClock, Service};

#[tokio::test]
async fn zookeeper_and_rabbitmq_run_on_their_hosts_and_come_back_after_a_kill() {
    assert!(
        can_create_hosts(),
        "the test bed needs root, ip, iptables and tc (scripts/setup.sh)"
    );
    // Under a folder only root may enter, as a CI clone in a `mktemp -d` folder is: the broker, which runs as
    // its own user, must not need to reach it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut bed = Testbed::create(202, &["zk", "mq"]).unwrap();
    let mut zk = Service::zookeeper(bed.host("zk"), &dir.path().join("zk")).unwrap();
    let mut mq = Service::rabbitmq(bed.host("mq"), &dir.path().join("mq")).unwrap();
    zk.start().await.unwrap();
    mq.start().await.unwrap();
    assert!(services::answers(bed.host("mq").addr, services::AMQP_PORT).await);
    // An AMQP connection from the suite's side, as the workers on other hosts will make.
    let url = format!("amqp://{}:{}/%2f", bed.host("mq").addr, services::AMQP_PORT);
    let conn = broker::connect(&url, "testbed", broker::CONNECT_TIMEOUT)
        .await
        .unwrap();
    let _ = conn.close(200, "done".into()).await;

    mq.kill().await;
    assert!(
        !mq.serves().await,
        "the broker still answers after its kill"
    );
    mq.start().await.unwrap();
    zk.kill().await;
    assert!(!zk.serves().await);
    zk.start().await.unwrap();
    assert!(mq.serves().await && zk.serves().await);
    zk.kill().await;
    mq.kill().await;
    bed.teardown();
}

#[tokio::test]
async fn a_program_started_by_a_hosts_launcher_reads_the_hosts_wall_clock() {
    assert!(
        can_create_hosts(),
        "the test bed needs root, ip, iptables and tc (scripts/setup.sh)"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut bed = Testbed::create(203, &["h"]).unwrap();
    let host = bed.host("h").clone();
    let clock = HostClock::new(dir.path(), &host).unwrap();
    let launcher = dir.path().join("launch-date");
    services::write_launcher(&launcher, &host, &clock, std::path::Path::new("/bin/date")).unwrap();
    let read = |launcher: std::path::PathBuf| async move {
        let out = tokio::process::Command::new(launcher)
            .arg("+%s")
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<i64>()
            .unwrap()
    };
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    let same = read(launcher.clone()).await - now();
    assert!(same.abs() <= 1, "offset 0 read as {same} s");
    clock.set_offset_ms(-10_000).unwrap();
    let behind = read(launcher.clone()).await - now();
    assert!(
        (-11..=-9).contains(&behind),
        "offset -10 s read as {behind} s"
    );
    bed.teardown();
}

//! Issue 7: API clients that hang up mid-stream leave no fd, thread or
//! stream behind. Alone in its binary, so no other test's containers come
//! and go while the daemon's fds and threads are counted.

use std::time::Duration;

use portwarden_proto::v1;
use portwarden_tests::api::{ApiAgent, pinger};
use portwarden_tests::{TestContainer, eventually};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_hang_up_mid_stream_leave_nothing_behind() {
    let daemon = ApiAgent::start("api-leak", "").await;
    let c = TestContainer::run_cmd("api-leak", &[], &["sh", "-c", &pinger("0.1")]);
    // The daemon's own capture of it is attached; no API connection is
    // open yet, so the baseline holds none.
    eventually("the daemon's own capture of the container", WAIT, || {
        daemon.agent.find_json("capture attached", |v| v["container"] == c.id.as_str())
    })
    .await;
    let baseline = daemon.agent.fds_and_threads();
    for round in 0..5 {
        let mut api = daemon.client().await;
        let selector = Some(v1::Selector { containers: vec![c.id[..12].to_owned()], pod: String::new() });
        let mut packets = api
            .stream_packets(v1::StreamPacketsRequest { selector: selector.clone(), ..Default::default() })
            .await
            .expect("packets")
            .into_inner();
        let mut logs =
            api.stream_logs(v1::StreamLogsRequest { selector, sources: vec![] }).await.expect("logs").into_inner();
        let mut watch = api
            .watch_containers(v1::WatchContainersRequest { selector: None, existing: true })
            .await
            .expect("watch")
            .into_inner();
        let first = tokio::time::timeout(WAIT, packets.message()).await.expect("a batch in time").expect("ok");
        assert!(first.is_some(), "round {round}: the stream delivers");
        assert!(watch.message().await.expect("ok").is_some());
        let during = daemon.agent.fds_and_threads();
        assert!(during.0 > baseline.0, "round {round}: the stream has its own capture socket: {during:?}");
        // Hang up mid-stream: drop the streams and the connection.
        drop((packets, watch));
        let _ = tokio::time::timeout(Duration::from_millis(100), logs.message()).await;
        drop((logs, api));
    }
    let after = eventually("fds and threads back to baseline", WAIT, || {
        let now = daemon.agent.fds_and_threads();
        (now.0 <= baseline.0 && now.1 <= baseline.1).then_some(now)
    })
    .await;
    eprintln!("fds and threads: baseline {baseline:?}, after 5 abandoned rounds {after:?}");
    let mut api = daemon.client().await;
    let status = api.status(v1::StatusRequest {}).await.expect("status").into_inner();
    assert_eq!(status.api_streams, 0, "no stream is still counted");
    let mine = status.captures.iter().filter(|x| x.container_id == c.id).count();
    assert_eq!(mine, 1, "only the daemon's own capture of it is left: {:?}", status.captures);
}

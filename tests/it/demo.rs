//! `vantage demo` as a user runs it: a real failover seen over DNS, and quorum refusing a
//! one-region failure.

use std::{net::IpAddr, time::Duration};

use hickory_proto::rr::RecordType;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_fails_over_and_quorum_refuses_a_one_region_failure() {
    init();
    let dir = tempfile::tempdir().expect("tempdir");
    let vantage = Vantage::demo(dir.path());
    vantage.wait_ready().await;
    let text = vantage.stdout_rest.lock().expect("lock").join("\n");
    assert!(
        text.contains("dig @127.0.0.1"),
        "prints what to try:\n{text}"
    );

    let www = || async {
        addresses(
            &udp_query(
                vantage.dns,
                &query_message("www.example.com.", RecordType::A, false),
            )
            .await,
        )
    };
    let use1: IpAddr = "127.0.0.2".parse().expect("ip");
    let euw1: IpAddr = "127.0.0.3".parse().expect("ip");
    assert_eq!(www().await, vec![use1]);
    let api = udp_query(
        vantage.dns,
        &query_message("api.example.com.", RecordType::A, false),
    )
    .await;
    assert_eq!(addresses(&api).len(), 3);
    // The demo zone is signed: a DO query gets its RRSIG.
    let mut signed = query_message("www.example.com.", RecordType::A, true);
    signed.edns.as_mut().expect("edns").set_dnssec_ok(true);
    let m = udp_query(vantage.dns, &signed).await;
    assert!(
        m.answers
            .iter()
            .any(|r| r.to_string().contains(" RRSIG A ")),
        "{m:?}"
    );

    // A page of another site cannot fail a backend through the visitor's browser (a simple
    // cross-site POST needs no preflight): refused, nothing changes.
    let host = vantage.admin.to_string();
    for browser in [
        [
            ("origin", "http://evil.example"),
            ("content-type", "text/plain"),
        ],
        [
            ("sec-fetch-site", "cross-site"),
            ("content-type", "text/plain"),
        ],
    ] {
        let mut headers = vec![("host", host.as_str())];
        headers.extend(browser);
        let (code, body) = http_request_with(
            vantage.admin,
            "POST",
            "/demo/backends/use1/fail",
            &headers,
            "x",
        )
        .await;
        assert_eq!(code, 403, "{body}");
    }
    let (_, backends) = http_get(vantage.admin, "/demo/backends").await;
    assert!(!backends.contains("failed"), "{backends}");
    assert!(backends.contains("healthy"), "{backends}");
    assert_eq!(www().await, vec![use1]);

    // Fail use1 for every region: www fails over to euw1 (fall 2 x interval 1s + margin).
    let (code, body) = http_request(vantage.admin, "POST", "/demo/backends/use1/fail").await;
    assert_eq!(code, 200, "{body}");
    eventually(
        Duration::from_secs(6),
        "www to fail over to euw1",
        || async { (www().await == vec![euw1]).then_some(()) },
    )
    .await;

    // One region loses sight of euw1: quorum holds, the answer stays.
    let (code, _) = http_request(
        vantage.admin,
        "POST",
        "/demo/backends/euw1/fail?region=us-east",
    )
    .await;
    assert_eq!(code, 200);
    let seen = eventually(
        Duration::from_secs(6),
        "us-east to see euw1 Down",
        || async {
            let status = vantage.status().await;
            let euw1 = status["endpoints"]
                .as_array()?
                .iter()
                .find(|e| e["id"] == "euw1")?
                .clone();
            (euw1["down_votes"] == 1).then_some(euw1)
        },
    )
    .await;
    assert_eq!(seen["verdict"], "up", "{seen}");
    assert_eq!(www().await, vec![euw1]);

    // A per-region restore of a backend failed everywhere is refused, not ignored.
    let (code, _) = http_request(
        vantage.admin,
        "POST",
        "/demo/backends/use1/restore?region=us-east",
    )
    .await;
    assert_eq!(code, 409);

    // Restore use1: the answer returns to it.
    http_request(vantage.admin, "POST", "/demo/backends/use1/restore").await;
    eventually(Duration::from_secs(6), "www to return to use1", || async {
        (www().await == vec![use1]).then_some(())
    })
    .await;
    let (code, _) = http_request(vantage.admin, "POST", "/demo/backends/nope/fail").await;
    assert_eq!(code, 404);
}

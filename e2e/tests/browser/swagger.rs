//! Swagger UI in a real browser: the public API's document at the gateway and the database API's on the
//! orchestrator, each page listing its operations.

use e2e::system::System;

use crate::chrome::Browser;

/// Opens Swagger UI at `url`, waits for its operations, and returns each one as "METHOD path".
async fn operations(browser: &Browser, url: &str, shot: &str) -> Vec<String> {
    browser.goto(url).await;
    browser
        .wait_for(".opblock .opblock-summary-path", "Swagger UI's operations")
        .await;
    browser.screenshot(shot).await;
    let listed = browser
        .eval(
            r#"return [...document.querySelectorAll('.opblock')].map(op =>
                 op.querySelector('.opblock-summary-method').textContent.trim() + ' ' +
                 op.querySelector('.opblock-summary-path').textContent.replace(/\u200b/g, '').trim())"#,
        )
        .await;
    listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn swagger_ui_shows_the_operations_of_both_apis() {
    let browser = Browser::start().await;
    let system = System::start().await;

    let public = operations(
        &browser,
        &format!("{}/api/docs/", system.gateway),
        "swagger-1-public-api",
    )
    .await;
    for op in [
        "PUT /api/v1/users",
        "GET /api/v1/users",
        "DELETE /api/v1/users/{username}",
        "POST /api/v1/rides",
        "GET /api/v1/rides",
        "GET /api/v1/rides/{rideId}",
        "POST /api/v1/rides/{rideId}",
        "DELETE /api/v1/rides/{rideId}",
        "GET /api/v1/rides/count",
    ] {
        assert!(
            public.contains(&op.to_owned()),
            "{op} missing from {public:?}"
        );
    }

    let database = operations(
        &browser,
        &format!("{}/api/docs/", system.cluster.base),
        "swagger-2-database-api",
    )
    .await;
    for op in [
        "POST /api/v1/db/write",
        "POST /api/v1/db/read",
        "POST /api/v1/db/clear",
        "POST /api/v1/crash/master",
        "POST /api/v1/crash/slave",
        "GET /api/v1/worker/list",
    ] {
        assert!(
            database.contains(&op.to_owned()),
            "{op} missing from {database:?}"
        );
    }
    assert!(
        !database.iter().any(|op| op.contains("/api/v1/users")),
        "the database API's page shows only its own operations: {database:?}"
    );
    browser.close().await;
}

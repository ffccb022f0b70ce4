//! The public API's document, served by the gateway, fuzzed through the gateway: users and rides behind nginx,
//! as clients reach them.

use e2e::system::System;
use reqwest::StatusCode;

use crate::fuzz;

#[tokio::test(flavor = "multi_thread")]
async fn the_public_api_answers_as_its_document_says_whatever_it_is_sent() {
    let s = System::start().await;
    // Users the documents' examples name, so that requests built from the examples reach past "unknown user".
    s.register("alice").await;
    s.register("bob").await;
    let document = format!("{}/api/openapi.json", s.gateway);
    fuzz(&document, &s.gateway, None).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_shows_the_public_document_and_swagger_ui() {
    let s = System::start().await;
    let (status, document) = s.get("/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let paths = document["paths"].as_object().expect("paths");
    assert!(
        paths.contains_key("/api/v1/users/{username}")
            && paths.contains_key("/api/v1/rides/{rideId}")
    );
    // Swagger UI's page, and the script that points it at the document, both through the gateway.
    let http = reqwest::Client::new();
    let page = http
        .get(format!("{}/api/docs", s.gateway))
        .send()
        .await
        .unwrap();
    assert_eq!(
        page.status(),
        StatusCode::OK,
        "after the redirect to /api/docs/"
    );
    assert!(page.text().await.unwrap().contains("swagger-ui"));
    let script = http
        .get(format!("{}/api/docs/swagger-initializer.js", s.gateway))
        .send()
        .await
        .unwrap();
    assert!(script.text().await.unwrap().contains("/api/openapi.json"));
    // Neither is a counted route of either service.
    assert_eq!((s.users_count().await, s.rides_count().await), (0, 0));
    s.stop().await;
}

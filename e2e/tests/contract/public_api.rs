//! The public API's document, served by the gateway, fuzzed through the gateway: users and rides behind nginx,
//! as clients reach them.

use e2e::system::System;

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

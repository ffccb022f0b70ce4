//! The rider page (`/` on the gateway, `gateway/www`) in a real browser against the real system: nginx serving
//! the page and routing its API calls to the users and rides services, the orchestrator and its workers behind
//! them. Two riders share a ride; every error the API answers shows up next to what caused it; the page fits a
//! phone and a desktop and works from the keyboard.

use e2e::st;
use e2e::system::System;
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::Locator;
use protocol::Value;
use public_api::Timestamp;
use reqwest::StatusCode;
use serde_json::json;
use sha1::{Digest, Sha1};

use crate::chrome::{Browser, WIDE};

/// A phone held upright (the CSS viewport of a common 6.1" phone).
const PHONE: (u32, u32) = (390, 844);

/// India's time zone, +05:30: the riders' own, and not the service's (UTC), so a page that read the picked time
/// in the browser's zone would send a time 5½ hours off.
const KOLKATA: &str = "Asia/Kolkata";

/// One rider's browser on the page.
struct Rider {
    browser: Browser,
    base: String,
}

impl Rider {
    async fn open(system: &System, zone: &str, size: (u32, u32)) -> Rider {
        let browser = Browser::start_with(&[("TZ", zone)]).await;
        browser.resize(size).await;
        let rider = Rider {
            browser,
            base: system.gateway.clone(),
        };
        rider.reload().await;
        rider
    }

    /// Loads the page and waits until it has the areas and the riders.
    async fn reload(&self) {
        self.browser.goto(&format!("{}/", self.base)).await;
        self.browser
            .wait_for(r#"body[data-ready="true"]"#, "the page, loaded")
            .await;
    }

    async fn element(&self, css: &str) -> Element {
        self.browser.wait_for(css, css).await
    }

    async fn click(&self, css: &str) {
        self.element(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    async fn type_into(&self, css: &str, text: &str) {
        let input = self.element(css).await;
        input.clear().await.expect("clearing an input");
        input
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    async fn value(&self, css: &str) -> String {
        self.element(css)
            .await
            .prop("value")
            .await
            .expect("reading a value")
            .unwrap_or_default()
    }

    async fn shows(&self, css: &str, expected: &str) -> String {
        self.browser.wait_for_text(css, expected).await
    }

    async fn displayed(&self, css: &str) -> bool {
        match self.browser.client().find(Locator::Css(css)).await {
            Ok(element) => element.is_displayed().await.expect("is it displayed"),
            Err(_) => false,
        }
    }

    async fn sign_up(&self, username: &str, password: &str) {
        // The form is folded away while a rider is chosen.
        if !self.displayed("#signup-username").await {
            self.click("#signup-box summary").await;
        }
        self.type_into("#signup-username", username).await;
        self.type_into("#signup-password", password).await;
        self.click("#signup-submit").await;
    }

    /// Types `typed` into an area picker, takes the first suggestion with the keyboard (Enter), and checks that
    /// it is `expected`.
    async fn pick_area(&self, input: &str, typed: &str, expected: &str) {
        self.type_into(input, typed).await;
        let first = format!("{input}-list [role=option][aria-selected=true]");
        self.shows(&first, expected).await;
        self.element(input)
            .await
            .send_keys(&Key::Enter.to_string())
            .await
            .expect("pressing Enter");
        assert_eq!(self.value(input).await, expected, "the picked area");
    }

    /// Types a date into a date input, as Chromium's en-US input takes it (month, day, year).
    async fn set_date(&self, css: &str, (year, month, day): (i32, u32, u32)) {
        let input = self.element(css).await;
        input
            .send_keys(&format!("{month:02}{day:02}{year}"))
            .await
            .expect("typing a date");
        assert_eq!(
            self.value(css).await,
            format!("{year:04}-{month:02}-{day:02}"),
            "the date input's value"
        );
    }

    /// Types a time into a time input (12-hour, en-US: hours, minutes, AM or PM).
    async fn set_time(&self, css: &str, (hour, minute): (u32, u32)) {
        let twelve = match hour % 12 {
            0 => 12,
            h => h,
        };
        let half = if hour < 12 { "AM" } else { "PM" };
        self.element(css)
            .await
            .send_keys(&format!("{twelve:02}{minute:02}{half}"))
            .await
            .expect("typing a time");
        assert_eq!(
            self.value(css).await,
            format!("{hour:02}:{minute:02}"),
            "the time input's value"
        );
    }

    async fn choose_me(&self, username: &str) {
        let select = self.element("#me").await;
        select
            .select_by_value(username)
            .await
            .unwrap_or_else(|e| panic!("choosing {username:?} as who I am: {e}"));
    }

    async fn search(&self, from: (&str, &str), to: (&str, &str)) {
        self.pick_area("#search-from", from.0, from.1).await;
        self.pick_area("#search-to", to.0, to.1).await;
        self.click("#search-submit").await;
    }

    /// Opens the ride `ride_id` from the search results.
    async fn open_ride(&self, ride_id: i64) {
        self.click(&format!(
            r#"#results-list button[data-ride-id="{ride_id}"]"#
        ))
        .await;
        self.shows("#details-title", &format!("Ride #{ride_id}"))
            .await;
    }

    /// Clicks "Join" on the ride shown, which the rides service refuses: the page shows the service's own
    /// reason, asked here by sending the same request.
    async fn join_is_refused(&self, system: &System, ride: i64, username: &str) {
        let path = format!("/api/v1/rides/{ride}");
        let reason = refusal(&system.post(&path, &json!({ "username": username })).await);
        self.click("#join").await;
        self.shows(
            "#details-error",
            &format!("Could not join ride #{ride}: {}", sentence(&reason)),
        )
        .await;
    }

    async fn riders(&self) -> Vec<String> {
        let mut names = Vec::new();
        for li in self.browser.all("#details-riders li").await {
            names.push(li.text().await.expect("a rider's name"));
        }
        names
    }
}

/// The SHA-1 of `text` as 40 lowercase hex digits: what the contract stores for a password.
fn sha1_hex(text: &str) -> String {
    Sha1::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the page is expected to show for an API error: the service's own sentence, capitalised, with a full stop.
fn sentence(error: &str) -> String {
    let mut chars = error.chars();
    let first = chars.next().expect("an error sentence");
    let text = format!("{}{}", first.to_uppercase(), chars.as_str());
    if text.ends_with('.') {
        text
    } else {
        format!("{text}.")
    }
}

/// The `error` of a refused API answer, asserting it is a 400.
fn refusal(answer: &(StatusCode, serde_json::Value)) -> String {
    assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{}", answer.1);
    answer.1["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {}", answer.1))
        .to_owned()
}

/// (year, month, day) of a time `days` from now, in UTC.
fn utc_date_in(days: i64) -> (i32, u32, u32) {
    let text = Timestamp::from_unix(Timestamp::now().unix() + days * 86_400)
        .expect("a representable time")
        .to_string();
    // DD-MM-YYYY:SS-MM-HH
    (
        text[6..10].parse().unwrap(),
        text[3..5].parse().unwrap(),
        text[0..2].parse().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn two_riders_share_a_ride_from_sign_up_to_seeing_each_other_in_its_details() {
    let s = System::start().await;
    // Asha plans on a laptop in India; Bilal uses a phone whose clock says UTC.
    let asha = Rider::open(&s, KOLKATA, WIDE).await;
    let bilal = Rider::open(&s, "UTC", PHONE).await;
    asha.shows("#clock", "Times are in UTC, the service's time zone")
        .await;
    asha.shows("#me", "nobody has signed up yet").await;

    // Sign-up: the page sends the contract's SHA-1 of the password, never the password.
    asha.sign_up("asha", "correct horse battery").await;
    asha.shows("#signup-ok", "Welcome, asha!").await;
    assert_eq!(asha.value("#me").await, "asha", "signed up is chosen");
    let stored = s
        .cluster
        .read_ok(
            "SELECT password FROM users WHERE username = ?",
            vec![Value::Text("asha".into())],
        )
        .await;
    assert_eq!(
        stored.rows,
        vec![vec![Value::Text(sha1_hex("correct horse battery"))]],
        "the stored password is the SHA-1 of what was typed"
    );
    bilal.sign_up("bilal", "tr0ub4dor&3").await;
    bilal.shows("#signup-ok", "Welcome, bilal!").await;
    assert_eq!(bilal.value("#me").await, "bilal");

    // Asha offers a ride tomorrow at 10:30 UTC, picking the areas by name and the time with the pickers.
    let day = utc_date_in(1);
    asha.pick_area("#create-from", "thani", "Thanisandra").await;
    asha.pick_area("#create-to", "attu", "Atturu").await;
    asha.set_date("#create-date", day).await;
    asha.set_time("#create-time", (10, 30)).await;
    asha.click("#create-submit").await;
    let offered = asha.shows("#create-ok", "is offered").await;
    let ride_id: i64 = offered
        .trim_start_matches("Ride #")
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no ride number in {offered:?}"));
    // What the service stored is 10:30 UTC, whatever the browser's zone; the page shows both.
    let (status, ride) = s.get(&format!("/api/v1/rides/{ride_id}")).await;
    assert_eq!(status, StatusCode::OK);
    let (year, month, date) = day;
    assert_eq!(
        ride,
        json!({"rideId": ride_id, "created_by": "asha", "users": [],
               "timestamp": format!("{date:02}-{month:02}-{year}:00-30-10"),
               "source": 6, "destination": 3}),
    );
    asha.shows("#details-when", "10:30 UTC").await;
    asha.shows("#details-when", "16:00 your time").await;
    asha.shows("#details-from", "Thanisandra").await;
    asha.shows("#details-riders", "Nobody yet").await;
    assert!(
        !asha.displayed("#join").await,
        "the creator is not offered to join their own ride"
    );
    assert!(asha.displayed("#delete-ride").await);
    asha.browser.screenshot("rider-offered").await;

    // Bilal finds it by typing parts of the names, and joins.
    bilal
        .search(("Thani", "Thanisandra"), ("Atturu", "Atturu"))
        .await;
    bilal
        .shows(
            "#results-summary",
            "1 upcoming ride from Thanisandra to Atturu",
        )
        .await;
    bilal
        .shows(
            &format!(r#"#results-list button[data-ride-id="{ride_id}"]"#),
            "offered by asha",
        )
        .await;
    bilal.open_ride(ride_id).await;
    bilal.shows("#details-creator", "asha").await;
    assert!(!bilal.displayed("#delete-ride").await, "not bilal's ride");
    bilal.click("#join").await;
    bilal
        .shows("#details-ok", &format!("You joined ride #{ride_id}"))
        .await;
    assert_eq!(bilal.riders().await, ["bilal (you)"]);
    assert!(!bilal.displayed("#join").await, "joined already");
    bilal
        .browser
        .eval(r#"document.getElementById("details-ok").scrollIntoView({block: "end"});"#)
        .await;
    bilal.browser.screenshot("rider-joined-phone").await;

    // Asha sees Bilal among the riders.
    asha.click("#details-refresh").await;
    asha.shows("#details-riders", "bilal").await;
    assert_eq!(asha.riders().await, ["bilal"]);
    asha.browser.screenshot("rider-sees-who-joined").await;
    let (_, ride) = s.get(&format!("/api/v1/rides/{ride_id}")).await;
    assert_eq!(ride["users"], json!(["bilal"]));

    // Asha deletes the ride (after confirming); Bilal deletes his account (after confirming).
    asha.click("#delete-ride").await;
    asha.shows("#delete-ride-question", "Its riders lose their places")
        .await;
    asha.click("#delete-ride-yes").await;
    asha.shows("#details-ok", &format!("Ride #{ride_id} is deleted"))
        .await;
    let (status, _) = s.get(&format!("/api/v1/rides/{ride_id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "the ride is gone");

    bilal.click("#delete-account").await;
    bilal
        .shows("#delete-account-question", "Delete the account “bilal”?")
        .await;
    bilal.click("#delete-account-no").await;
    assert!(!bilal.displayed("#delete-account-confirm").await);
    let (status, _) = s.get("/api/v1/users/bilal").await;
    assert_eq!(status, StatusCode::OK, "kept when the rider said no");
    bilal.click("#delete-account").await;
    bilal.click("#delete-account-yes").await;
    bilal
        .shows("#account-ok", "The account “bilal” is deleted")
        .await;
    assert_eq!(bilal.value("#me").await, "", "nobody is chosen any more");
    let (status, _) = s.get("/api/v1/users/bilal").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the account is gone");
    let (_, users) = s.get("/api/v1/users").await;
    assert_eq!(users, json!(["asha"]));

    asha.browser.close().await;
    bilal.browser.close().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_error_the_api_answers_is_shown_next_to_what_caused_it() {
    let mut s = System::start().await;
    s.register("asha").await;
    s.register("carol").await;
    let page = Rider::open(&s, "UTC", WIDE).await;

    // Sign-up: what the page checks itself, then what the users service refuses (its own words).
    page.click("#signup-submit").await;
    page.shows("#signup-username-error", "Choose a username.")
        .await;
    page.shows("#signup-password-error", "Choose a password.")
        .await;
    let taken = refusal(&s.put_user("asha").await);
    page.sign_up("asha", "whatever").await;
    page.shows(
        "#signup-error",
        &format!("Could not sign up: {}", sentence(&taken)),
    )
    .await;
    let unaddressable = refusal(&s.put_user("..").await);
    page.sign_up("..", "whatever").await;
    page.shows(
        "#signup-error",
        &format!("Could not sign up: {}", sentence(&unaddressable)),
    )
    .await;

    // Offering a ride: nobody chosen, an area that does not exist, then the rides service's refusals.
    page.pick_area("#create-from", "thani", "Thanisandra").await;
    page.type_into("#create-to", "Nowhere").await;
    page.click("#create-submit").await;
    page.shows("#create-to-error", "No area is called “Nowhere”")
        .await;
    page.pick_area("#create-to", "thani", "Thanisandra").await;
    page.click("#create-submit").await;
    page.shows("#create-error", "Choose who you are under “You” first")
        .await;
    page.choose_me("asha").await;
    let tomorrow = timestamp_at(utc_date_in(1), (10, 30));
    let same = refusal(
        &s.create_ride_raw("asha", &tomorrow, json!(6), json!(6))
            .await,
    );
    page.click("#create-submit").await;
    page.shows(
        "#create-error",
        &format!("Could not offer the ride: {}", sentence(&same)),
    )
    .await;
    page.pick_area("#create-to", "attu", "Atturu").await;
    let yesterday = utc_date_in(-1);
    let past = refusal(
        &s.create_ride_raw(
            "asha",
            &timestamp_at(yesterday, (10, 30)),
            json!(6),
            json!(3),
        )
        .await,
    );
    page.set_date("#create-date", yesterday).await;
    page.set_time("#create-time", (10, 30)).await;
    page.click("#create-submit").await;
    page.shows(
        "#create-error",
        &format!("Could not offer the ride: {}", sentence(&past)),
    )
    .await;
    page.browser.screenshot("rider-error-past").await;
    // Carol is chosen here while her account is deleted elsewhere (another device).
    page.reload().await;
    page.choose_me("carol").await;
    s.delete("/api/v1/users/carol").await;
    let unknown = refusal(
        &s.create_ride_raw("carol", &tomorrow, json!(6), json!(3))
            .await,
    );
    page.pick_area("#create-from", "thani", "Thanisandra").await;
    page.pick_area("#create-to", "attu", "Atturu").await;
    page.click("#create-submit").await;
    page.shows(
        "#create-error",
        &format!("Could not offer the ride: {}", sentence(&unknown)),
    )
    .await;
    // Deleting that account from the page: the users service knows no such user any more.
    let no_user = refusal(&s.delete("/api/v1/users/carol").await);
    page.click("#delete-account").await;
    page.click("#delete-account-yes").await;
    page.shows(
        "#account-error",
        &format!("Could not delete the account: {}", sentence(&no_user)),
    )
    .await;

    // Joining: bilal has asha's ride open while things change under him (on another device, or by time).
    s.register("bilal").await;
    let ride = s.create_ride("asha", &tomorrow, 6, 3).await;
    page.reload().await;
    page.choose_me("bilal").await;
    page.search(("thani", "Thanisandra"), ("attu", "Atturu"))
        .await;
    page.open_ride(ride).await;
    s.join(ride, "bilal").await;
    page.join_is_refused(&s, ride, "bilal").await;
    let second = s.create_ride("asha", &tomorrow, 6, 3).await;
    page.click("#search-submit").await;
    page.open_ride(second).await;
    // The ride's time passes while the page shows it.
    s.cluster
        .write_ok(vec![st(
            "UPDATE rides SET timestamp = ? WHERE id = ?",
            vec![
                Value::Integer(Timestamp::now().unix() - 60),
                Value::Integer(second),
            ],
        )])
        .await;
    page.join_is_refused(&s, second, "bilal").await;
    let third = s.create_ride("asha", &tomorrow, 6, 3).await;
    page.click("#search-submit").await;
    page.open_ride(third).await;
    s.delete(&format!("/api/v1/rides/{third}")).await;
    page.click("#join").await;
    page.shows(
        "#details-error",
        &format!("Could not join ride #{third}: it no longer exists"),
    )
    .await;
    page.click("#details-refresh").await;
    page.shows("#details-error", &format!("Ride #{third} no longer exists"))
        .await;
    assert!(!page.displayed("#join").await, "nothing left to join");
    let fourth = s.create_ride("asha", &tomorrow, 6, 3).await;
    page.click("#search-submit").await;
    page.open_ride(fourth).await;
    s.delete("/api/v1/users/bilal").await;
    page.join_is_refused(&s, fourth, "bilal").await;
    page.browser.screenshot("rider-error-join").await;

    // Deleting a ride someone else already deleted.
    page.reload().await;
    page.choose_me("asha").await;
    page.search(("thani", "Thanisandra"), ("attu", "Atturu"))
        .await;
    page.open_ride(fourth).await;
    let (status, _) = s.delete(&format!("/api/v1/rides/{fourth}")).await;
    assert_eq!(status, StatusCode::OK);
    // What the page will be told: the same request again.
    let missing = refusal(&s.delete(&format!("/api/v1/rides/{fourth}")).await);
    page.click("#delete-ride").await;
    page.click("#delete-ride-yes").await;
    page.shows(
        "#details-error",
        &format!("Could not delete ride #{fourth}: {}", sentence(&missing)),
    )
    .await;

    // A service that does not answer: the gateway's 503, with the request id to quote.
    s.stop_users().await;
    page.sign_up("dana", "whatever").await;
    let text = page
        .shows(
            "#signup-error",
            "Could not sign up: The service behind the gateway is unavailable. Please try again in a moment. \
             (request ",
        )
        .await;
    assert!(text.ends_with(')'), "{text}");
    s.start_users().await;
    page.sign_up("dana", "whatever").await;
    page.shows("#signup-ok", "Welcome, dana!").await;
    // The page changed nothing it was refused: only what succeeded is stored.
    let (_, users) = s.get("/api/v1/users").await;
    assert_eq!(users, json!(["asha", "dana"]));

    page.browser.close().await;
    s.stop().await;
}

/// The contract's timestamp of `time` (hours, minutes) UTC on `date`.
fn timestamp_at((year, month, day): (i32, u32, u32), (hour, minute): (u32, u32)) -> String {
    format!("{day:02}-{month:02}-{year}:00-{minute:02}-{hour:02}")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_fits_a_phone_and_a_desktop_works_from_the_keyboard_and_hashes_as_the_contract_says(
) {
    let s = System::start().await;
    s.register("asha").await;
    let page = Rider::open(&s, "UTC", PHONE).await;

    for (size, name) in [(PHONE, "rider-phone"), (WIDE, "rider-desktop")] {
        page.browser.resize(size).await;
        page.reload().await;
        // Nothing wider than the window: no sideways scrolling on a phone.
        let widths = page
            .browser
            .eval("return [document.documentElement.scrollWidth, window.innerWidth];")
            .await;
        let (content, window) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
        assert!(
            content <= window,
            "{name}: the page is {content} px wide in a {window} px window"
        );
        // Every control a rider uses is on screen and named for assistive technology.
        let unnamed = page
            .browser
            .eval(
                r#"return [...document.querySelectorAll("input, select, button")]
                    .filter((e) => e.offsetParent !== null)
                    .filter((e) => !(e.labels && e.labels.length) && !e.textContent.trim()
                                   && !e.getAttribute("aria-label"))
                    .map((e) => e.id);"#,
            )
            .await;
        assert_eq!(unnamed, json!([]), "{name}: controls without a name");
        page.browser.screenshot(name).await;
    }

    // From the keyboard only: Tab reaches every control in reading order, the area picker takes arrows and
    // Enter, and Enter submits.
    page.reload().await;
    let mut order = Vec::new();
    let body = page.element("body").await;
    for _ in 0..20 {
        body.send_keys(&Key::Tab.to_string())
            .await
            .expect("pressing Tab");
        let id = page.browser.eval("return document.activeElement.id;").await;
        order.push(id.as_str().unwrap_or_default().to_owned());
    }
    let wanted = [
        "me",
        "signup-username",
        "signup-password",
        "signup-submit",
        "search-from",
        "search-to",
        "search-submit",
        "create-from",
        "create-to",
        "create-date",
        "create-time",
        "create-submit",
    ];
    let reached: Vec<&str> = order
        .iter()
        .map(String::as_str)
        .filter(|id| wanted.contains(id))
        .collect();
    let mut deduplicated = reached.clone();
    deduplicated.dedup();
    assert_eq!(
        deduplicated, wanted,
        "the Tab order (all focused: {order:?})"
    );

    let from = page.element("#search-from").await;
    from.send_keys("nagar").await.expect("typing");
    page.shows("#search-from-list", "Nagar").await;
    let first = page
        .element("#search-from-list [aria-selected=true]")
        .await
        .text()
        .await
        .unwrap();
    from.send_keys(&format!("{}{}", Key::Down, Key::Enter))
        .await
        .expect("arrow down and Enter");
    let second = page.value("#search-from").await;
    assert!(
        second.to_lowercase().contains("nagar") && !first.starts_with(&second),
        "the arrow moved to the second suggestion ({second:?} after {first:?})"
    );
    assert!(!page.displayed("#search-from-list").await, "closed on pick");
    page.pick_area("#search-to", "thani", "Thanisandra").await;
    page.element("#search-to")
        .await
        .send_keys(&Key::Enter.to_string())
        .await
        .expect("Enter");
    page.shows("#results-summary", "No upcoming rides from")
        .await;

    // The password hash: crypto.subtle where the browser offers it, the page's own SHA-1 where it does not
    // (a page opened over plain HTTP from another machine); both agree with the contract's SHA-1.
    let inputs = [
        "",
        "abc",
        "correct horse battery",
        &"x".repeat(55),
        &"y".repeat(56),
        &"z".repeat(1000),
        "pässwörd ✓ 密码",
    ];
    for input in inputs {
        let hashes = page
            .browser
            .client()
            .execute_async(
                r#"const [text, done] = arguments;
                   const bytes = new TextEncoder().encode(text);
                   window.RideShare.sha1Hex(text)
                     .then((subtle) => done([subtle, window.RideShare.sha1HexPortable(bytes)]));"#,
                vec![json!(input)],
            )
            .await
            .expect("hashing in the page");
        assert_eq!(
            hashes,
            json!([sha1_hex(input), sha1_hex(input)]),
            "SHA-1 of {input:?}"
        );
    }
    assert_eq!(sha1_hex("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");

    page.browser.close().await;
    s.stop().await;
}

//! The rider page, the operator console and Swagger UI in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`, which
//! `scripts/setup.sh` installs) driven over WebDriver against a real cluster. Each step's screenshot is saved
//! in `target/browser-screenshots/`.

mod chrome;
mod console;
mod rider;
mod swagger;

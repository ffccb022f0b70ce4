//! Log lines on stderr, for every Rust process of the system.
//!
//! `RUST_LOG` filters (the process gives its default); `RIDESHARE_LOG_FORMAT` chooses the form: `text` (the
//! default, for people) or `json` (one JSON object per line, for a log pipeline: time, level, target, message,
//! fields, and the fields of the spans it was written in, such as `request_id`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The environment variable that chooses the form of log lines.
pub const FORMAT_VAR: &str = "RIDESHARE_LOG_FORMAT";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

impl Format {
    /// From the value of [`FORMAT_VAR`]; unset means text. Anything else is an error, so that a typo is not a
    /// silent fallback to the other format.
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim) {
            None | Some("") | Some("text") => Ok(Self::Text),
            Some("json") => Ok(Self::Json),
            Some(other) => Err(format!("{FORMAT_VAR} must be text or json, not {other:?}")),
        }
    }
}

/// Installs the process's log subscriber: `default_filter` unless `RUST_LOG` is set, the form from
/// [`FORMAT_VAR`]. Fails on an unknown form.
pub fn init(default_filter: &str) -> Result<(), String> {
    let format = Format::parse(std::env::var(FORMAT_VAR).ok().as_deref())?;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        Format::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        // The current span's fields (the request id among them) and the whole span list, so that a line
        // written deep in a request still names it.
        Format::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .init(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_is_text_unless_json_is_asked_for_and_a_typo_is_an_error() {
        assert_eq!(Format::parse(None), Ok(Format::Text));
        assert_eq!(Format::parse(Some("text")), Ok(Format::Text));
        assert_eq!(Format::parse(Some("json")), Ok(Format::Json));
        assert!(Format::parse(Some("jsno")).unwrap_err().contains("jsno"));
    }
}

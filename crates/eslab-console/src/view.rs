//! The page layout, the shared bits of markup, and the console's own script
//! and style (served as files: the Content-Security-Policy allows nothing inline).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use eslab_core::RecordedEvent;
use maud::{DOCTYPE, Markup, html};

/// The console's script: the live feed (Server-Sent Events) and the action
/// buttons. It builds every element with `textContent`, never HTML.
const SCRIPT: &str = include_str!("../assets/console.js");
const STYLE: &str = include_str!("../assets/console.css");

pub(crate) async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT).into_response()
}

pub(crate) async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

/// A whole page: the navigation, `title` and `body`.
pub(crate) fn page(base: &str, site: &str, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (site) }
                link rel="stylesheet" href={ (base) "/assets/console.css" };
                script src={ (base) "/assets/console.js" } defer {}
            }
            body data-base=(base) {
                nav {
                    a.brand href={ (base) "/" } { (site) }
                    a href={ (base) "/" } { "Streams" }
                    a href={ (base) "/live" } { "Live feed" }
                    a href={ (base) "/projections" } { "Projections" }
                    a href={ (base) "/lab" } { "Lab" }
                    form.find method="get" action={ (base) "/find" } {
                        input type="search" name="id" placeholder="stream id, e.g. account-42" aria-label="find a stream";
                        button type="submit" { "Find" }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// An error page with `status`.
pub(crate) fn error(base: &str, site: &str, status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = html! { p.error { (message) } p { a href={ (base) "/" } { "Back to the streams" } } };
    (status, page(base, site, title, body)).into_response()
}

/// JSON, pretty-printed (escaped by the template).
pub(crate) fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// A time as RFC 3339.
pub(crate) fn when(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| at.to_string())
}

/// A percent-encoded path segment or query value (stream ids may hold any
/// printable character but `/`... and the browser must get them back intact).
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// One event as an article: its facts, links by correlation and causation
/// id, a "state at this version" link when its aggregate is registered, and
/// its payload and metadata collapsible.
pub(crate) fn event(base: &str, event: &RecordedEvent, travel: bool, show_stream: bool) -> Markup {
    let metadata = serde_json::to_value(&event.metadata).unwrap_or(serde_json::Value::Null);
    let stream = event.stream_id.as_str();
    html! {
        article.event id={ "e-" (event.event_id) } data-type=(event.event_type) data-stream=(stream) {
            header {
                @if show_stream {
                    a.stream href={ (base) "/streams/" (encode(stream)) } { (stream) }
                    " "
                }
                span.version title="stream version" { "v" (event.stream_version) }
                " "
                strong.type { (event.event_type) }
                " "
                span.schema title="schema version" { "schema " (event.schema_version) }
                " "
                span.position title="global position" { "#" (event.position) }
                " "
                time datetime=(when(event.recorded_at)) { (when(event.recorded_at)) }
            }
            p.links {
                @if let Some(correlation) = event.metadata.correlation_id {
                    a.correlation href={ (base) "/requests/" (correlation) } { "request " (correlation) }
                    " "
                    @if let Some(causation) = event.metadata.causation_id {
                        a.causation href={ (base) "/requests/" (correlation) "#e-" (causation) } { "caused by " (causation) }
                        " "
                    }
                } @else if let Some(causation) = event.metadata.causation_id {
                    span.causation { "caused by " (causation) }
                    " "
                }
                @if travel {
                    a.state href={ (base) "/state/" (encode(stream)) "?version=" (event.stream_version) } { "state at v" (event.stream_version) }
                }
            }
            details open {
                summary { "payload" }
                pre.payload { (pretty(&event.payload)) }
            }
            details {
                summary { "metadata" }
                pre.metadata { (pretty(&metadata)) }
            }
        }
    }
}

/// A "next page" link, when there may be one.
pub(crate) fn next(href: Option<String>) -> Markup {
    html! {
        @if let Some(href) = href {
            p.pager { a.next href=(href) { "Next page →" } }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn encoding_keeps_unreserved_bytes_only() {
        assert_eq!(super::encode("account-1"), "account-1");
        assert_eq!(super::encode("a b/<x>"), "a%20b%2F%3Cx%3E");
        assert_eq!(super::encode("ä"), "%C3%A4");
    }
}

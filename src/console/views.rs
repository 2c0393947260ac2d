//! The console's markup. maud escapes every `(value)`; nothing here builds
//! HTML by hand.

use super::Viewer;
use crate::store::{DeliveryRow, DeliveryStatus, StoredEvent};
use actix_web::http::StatusCode;
use maud::{DOCTYPE, Markup, html};

/// Which section a page belongs to (marks the navigation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The overview.
    Overview,
    /// Events.
    Events,
    /// Deliveries and replay.
    Deliveries,
    /// Routes and simulate.
    Routes,
    /// Login and errors.
    None,
}

/// `2026-12-01 09:31:05` (UTC).
pub fn datetime(ms: i64) -> String {
    use time::macros::format_description;
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]"
            ))
            .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// `09:35` (UTC).
pub fn clock(ms: i64) -> String {
    use time::macros::format_description;
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(format_description!("[hour]:[minute]")).ok())
        .unwrap_or_default()
}

/// `3 h 12 min`, `4 min 5 s`, `12 s`.
pub fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86400, (s % 86400) / 3600),
    }
}

/// A path segment, percent-encoded (ids come from the store, but a link is
/// never built from unchecked text).
pub fn seg(s: &str) -> String {
    /// Everything but RFC 3986's unreserved characters.
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// `/console/events/<id>`.
pub fn event_href(id: &str) -> String {
    format!("/console/events/{}", seg(id))
}

/// `/console/deliveries/<id>`.
pub fn delivery_href(id: &str) -> String {
    format!("/console/deliveries/{}", seg(id))
}

/// A status badge.
pub fn status_badge(s: DeliveryStatus) -> Markup {
    html! { span class={ "badge " (s.as_str()) } { (s.as_str()) } }
}

/// The CSRF field every POST form carries.
pub fn csrf_field(v: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(v.csrf); }
}

/// The page frame: navigation, main, assets. `refresh` (seconds) makes the
/// script reload a page that shows work in progress.
pub fn layout(
    title: &str,
    section: Section,
    viewer: Option<&Viewer>,
    refresh: Option<u32>,
    body: Markup,
) -> Markup {
    let nav = [
        (Section::Overview, "/console", "Overview"),
        (Section::Events, "/console/events", "Events"),
        (Section::Deliveries, "/console/deliveries", "Deliveries"),
        (Section::Routes, "/console/routes", "Routes"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · clickup-bridge" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body data-refresh=[refresh] {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console" { "clickup-bridge" }
                    @if let Some(v) = viewer {
                        nav aria-label="Console" {
                            ul {
                                @for (s, href, label) in nav {
                                    li { a href=(href) aria-current=[(s == section).then_some("page")] { (label) } }
                                }
                            }
                        }
                        @if v.logged_in {
                            form.logout method="post" action="/console/logout" {
                                (csrf_field(v))
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// An error page (no data, no navigation needing a session).
pub fn error_page(status: StatusCode, message: &str) -> Markup {
    let title = status.canonical_reason().unwrap_or("Error");
    layout(
        title,
        Section::None,
        None,
        None,
        html! {
            p.error role="alert" { (message) }
            p { a href="/console" { "Back to the console" } }
        },
    )
}

/// The login page.
pub fn login(next: &str, failed: bool) -> Markup {
    layout(
        "Log in",
        Section::None,
        None,
        None,
        html! {
            @if failed {
                p.error role="alert" { "That is not the admin token. Check admin_token (or CLICKUP_BRIDGE_ADMIN_TOKEN) in the daemon's settings and try again." }
            }
            form.login method="post" action="/console/login" {
                p {
                    label for="token" { "Admin token" }
                    input #token type="password" name="token" autocomplete="current-password" required autofocus;
                }
                input type="hidden" name="next" value=(next);
                p { button type="submit" { "Log in" } }
            }
            p.muted { "The token is the daemon's admin_token. The session lasts "
                (super::session::SESSION_TTL.as_secs() / 3600) " hours, or until you log out." }
        },
    )
}

/// A table of events.
pub fn events_table(events: &[StoredEvent]) -> Markup {
    html! {
        table.list {
            thead { tr {
                th scope="col" { "Event" } th scope="col" { "Source" } th scope="col" { "Type" }
                th scope="col" { "Received (UTC)" } th scope="col" { "Routed" }
            } }
            tbody {
                @for e in events { tr {
                    td { a.mono href=(event_href(e.id.as_str())) { (e.id.as_str()) } }
                    td { (e.source) }
                    td { (e.event_type) }
                    td { (datetime(e.received_at)) }
                    td { @if e.routed_at.is_some() { "yes" } @else { span.badge.pending { "not yet" } } }
                } }
            }
        }
    }
}

/// A table of deliveries.
pub fn deliveries_table(rows: &[DeliveryRow]) -> Markup {
    html! {
        table.list {
            thead { tr {
                th scope="col" { "Delivery" } th scope="col" { "Route" } th scope="col" .num { "Step" }
                th scope="col" { "Target" } th scope="col" { "Status" } th scope="col" .num { "Attempts" }
                th scope="col" { "Created (UTC)" } th scope="col" { "Last error" }
            } }
            tbody {
                @for d in rows { tr {
                    td { a.mono href=(delivery_href(d.id.as_str())) { (d.id.as_str()) } }
                    td { (d.route) }
                    td.num { (d.step + 1) }
                    td { (d.target) }
                    td { (status_badge(d.status)) }
                    td.num { (d.attempts) }
                    td { (datetime(d.created_at)) }
                    td.excerpt { (d.last_error.as_deref().unwrap_or("")) }
                } }
            }
        }
    }
}

/// "Next page" (and "first page") links.
pub fn pager(first: &str, next: Option<String>, on_later_page: bool) -> Markup {
    html! {
        nav.pager aria-label="Pages" {
            @if on_later_page { a href=(first) { "First page" } }
            @if let Some(n) = next { a rel="next" href=(n) { "Next page" } }
        }
    }
}

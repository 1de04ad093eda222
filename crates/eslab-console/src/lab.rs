//! The lab report: `index.md` and the experiments' pages of the directory
//! `eslab lab run --out` wrote, rendered from Markdown (raw HTML in them is
//! shown as text), and their SVG charts.

use std::path::{Path as FsPath, PathBuf};

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{PreEscaped, html};
use pulldown_cmark::{CowStr, Event, Options, Parser, Tag};

use crate::Console;
use crate::ConsoleStore as Store;

/// Whether `name` is a plain file name of the report (no path, no dot file).
fn plain_name(name: &str, extension: &str) -> bool {
    name.strip_suffix(extension).is_some_and(|stem| {
        !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    })
}

/// Markdown as HTML: raw HTML becomes text, links to the report's own pages
/// and charts point into the console.
fn render(markdown: &str, base: &str) -> String {
    let lab = format!("{base}/lab");
    let events = Parser::new_ext(markdown, Options::ENABLE_TABLES).map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
        Event::Start(Tag::Link { link_type, dest_url, title, id }) => {
            Event::Start(Tag::Link { link_type, dest_url: local(dest_url, &lab), title, id })
        }
        Event::Start(Tag::Image { link_type, dest_url, title, id }) => {
            Event::Start(Tag::Image { link_type, dest_url: local(dest_url, &lab), title, id })
        }
        other => other,
    });
    let mut html = String::with_capacity(markdown.len() * 2);
    pulldown_cmark::html::push_html(&mut html, events);
    html
}

/// A link of the report: its own `x.md` pages and `x.svg` / `x.csv` files
/// into the console; `lab-results/x.md` likewise; anything else unchanged.
fn local<'a>(dest: CowStr<'a>, lab: &str) -> CowStr<'a> {
    let name = dest.strip_prefix("lab-results/").unwrap_or(&dest);
    if let Some(stem) = name.strip_suffix(".md").filter(|_| plain_name(name, ".md")) {
        return CowStr::from(format!("{lab}/{stem}"));
    }
    if plain_name(name, ".svg") || plain_name(name, ".csv") {
        return CowStr::from(format!("{lab}/files/{name}"));
    }
    dest
}

impl<S: Store> Console<S> {
    fn lab_dir(&self) -> Option<&PathBuf> {
        self.inner.lab.as_ref()
    }

    async fn lab_page(&self, file: &str, title: &str) -> Response {
        let Some(dir) = self.lab_dir() else {
            return self.render(
                "Lab",
                html! { p.empty { "No lab report configured. Run `eslab lab run --quick`, then start the console with `--lab-report lab-report`." } },
            );
        };
        let path = dir.join(file);
        match tokio::fs::read_to_string(&path).await {
            Ok(markdown) => {
                let body = html! { article.lab { (PreEscaped(render(&markdown, self.base()))) } };
                self.render(title, body)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.fail(StatusCode::NOT_FOUND, &format!("the lab report has no {file}"))
            }
            Err(e) => self.failed("reading the lab report", &e),
        }
    }
}

/// The report's index.
pub(crate) async fn index<S: Store>(State(console): State<Console<S>>) -> Response {
    console.lab_page("index.md", "Lab report").await
}

/// One experiment's page.
pub(crate) async fn page<S: Store>(State(console): State<Console<S>>, Path(page): Path<String>) -> Response {
    let file = format!("{page}.md");
    if !plain_name(&file, ".md") {
        return console.fail(StatusCode::NOT_FOUND, "no such page of the lab report");
    }
    console.lab_page(&file, &format!("Lab: {page}")).await
}

/// A chart (SVG) or a table (CSV) of the report.
pub(crate) async fn file<S: Store>(State(console): State<Console<S>>, Path(file): Path<String>) -> Response {
    let content_type = if plain_name(&file, ".svg") {
        "image/svg+xml"
    } else if plain_name(&file, ".csv") {
        "text/csv; charset=utf-8"
    } else {
        return console.fail(StatusCode::NOT_FOUND, "no such file of the lab report");
    };
    let Some(dir) = console.lab_dir() else {
        return console.fail(StatusCode::NOT_FOUND, "no lab report configured");
    };
    match tokio::fs::read(FsPath::new(dir).join(&file)).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type)], bytes).into_response(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => console.fail(StatusCode::NOT_FOUND, "no such file"),
        Err(e) => console.failed("reading the lab report", &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_html_is_text_and_links_stay_inside() {
        let html = render("<script>alert(1)</script>\n\n![c](peers.svg) [p](peers.md) [x](https://e.x/)", "/console");
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(html.contains("src=\"/console/lab/files/peers.svg\""), "{html}");
        assert!(html.contains("href=\"/console/lab/peers\""), "{html}");
        assert!(html.contains("href=\"https://e.x/\""), "{html}");
    }

    #[test]
    fn only_plain_names_are_files() {
        assert!(plain_name("peers.svg", ".svg"));
        assert!(!plain_name("../x.svg", ".svg"));
        assert!(!plain_name(".svg", ".svg"));
        assert!(!plain_name("a/b.svg", ".svg"));
    }
}

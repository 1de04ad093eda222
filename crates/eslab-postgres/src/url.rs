//! Database URLs in messages, without their secrets.

/// Query parameters whose values are secrets (libpq's and sqlx's names, and common ones).
const SECRET_PARAMETERS: &[&str] = &["password", "sslpassword", "passfile", "sslkey", "token", "secret"];

/// `url` with every secret masked, for messages and logs: the password of
/// `user:password@` and the values of secret query parameters
/// (`?password=…`, `sslpassword`, `passfile`, `sslkey`, `token`, `secret`).
/// Works for any database URL (`postgres://`, `sqlite://`, `memory:`). A URL
/// that does not parse is shown as its scheme only.
///
/// ```
/// use eslab_postgres::redact_url;
///
/// assert_eq!(redact_url("postgres://ada:pw@db/bank?password=pw&sslmode=require"),
///            "postgres://ada:***@db/bank?password=***&sslmode=require");
/// ```
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        return format!("{scheme}:(unparseable URL, not shown)");
    };
    if parsed.password().is_some() {
        // Only fails for URLs that cannot have a password, which this one has.
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(key, value)| {
                let secret = SECRET_PARAMETERS.iter().any(|s| key.eq_ignore_ascii_case(s));
                (key.into_owned(), if secret { "***".to_owned() } else { value.into_owned() })
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.into()
}

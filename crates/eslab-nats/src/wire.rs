//! The JetStream requests the store makes, at the protocol level: publishes
//! with their acknowledgement, atomic batches (ADR-50), and direct gets, one
//! message or a batch of them (ADR-31), with `min_last_seq` for
//! read-after-write (ADR-53). async-nats has no batch publish or batch get,
//! and its direct get has no `min_last_seq`; the requests are small JSON
//! documents and headers, sent over its client.

use std::time::Duration;

use async_nats::{Client, HeaderMap, Message, RequestErrorKind};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

/// Header names the store reads and writes.
pub(crate) mod header {
    /// Deduplication id: the event id.
    pub(crate) const MSG_ID: &str = "Nats-Msg-Id";
    /// The stream's last sequence on this subject must be this (0: no message).
    pub(crate) const EXPECTED_LAST_SUBJECT_SEQ: &str = "Nats-Expected-Last-Subject-Sequence";
    /// The whole stream's last sequence must be this.
    pub(crate) const EXPECTED_LAST_SEQ: &str = "Nats-Expected-Last-Sequence";
    pub(crate) const BATCH_ID: &str = "Nats-Batch-Id";
    pub(crate) const BATCH_SEQ: &str = "Nats-Batch-Sequence";
    pub(crate) const BATCH_COMMIT: &str = "Nats-Batch-Commit";
    /// Set by direct get: the message's stream sequence.
    pub(crate) const SEQUENCE: &str = "Nats-Sequence";
    /// The event's stream version (eslab's own).
    pub(crate) const VERSION: &str = "Eslab-Version";
}

/// The JetStream error codes the store acts on.
pub(crate) mod code {
    /// `wrong last sequence: N` (stream or subject expectation failed).
    pub(crate) const WRONG_LAST_SEQUENCE: u64 = 10071;
    /// `wrong last sequence` (the same, without the sequence).
    pub(crate) const WRONG_LAST_SEQUENCE_CONSTANT: u64 = 10164;
    /// A batch holds a message id already stored (deduplication).
    pub(crate) const BATCH_DUPLICATE: u64 = 10201;
    /// `min last sequence` not reached by the answering server.
    pub(crate) const MIN_LAST_SEQ: u64 = 10180;
    /// Stream not found.
    pub(crate) const STREAM_NOT_FOUND: u64 = 10059;
    /// No message found.
    pub(crate) const NO_MESSAGE: u64 = 10037;
}

/// What a JetStream request can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    /// The server answered with an API error.
    #[error("JetStream error {err_code} ({code}): {description}")]
    Api { code: u16, err_code: u64, description: String },
    /// No answer in time, nobody listening (no leader), or the connection is down:
    /// the outcome of a write is unknown.
    #[error("JetStream did not answer: {0}")]
    Unavailable(String),
    /// Nobody listens on the subject (a server still recovering its streams
    /// after a restart, no leader yet): the request reached no stream, so
    /// it can be sent again (reads and publishes are, for a while: see
    /// [`patiently`]).
    #[error("JetStream did not answer: no responders: {0}")]
    NoResponders(String),
    /// An answer that is not what the protocol says.
    #[error("unexpected JetStream answer: {0}")]
    Protocol(String),
}

impl WireError {
    /// The JetStream error code, if the server answered with one.
    pub(crate) fn err_code(&self) -> Option<u64> {
        match self {
            WireError::Api { err_code, .. } => Some(*err_code),
            _ => None,
        }
    }

    /// The sequence a `wrong last sequence: N` error names, if it names one.
    pub(crate) fn wrong_last_sequence(&self) -> Option<Option<u64>> {
        match self {
            WireError::Api {
                err_code: code::WRONG_LAST_SEQUENCE | code::WRONG_LAST_SEQUENCE_CONSTANT,
                description,
                ..
            } => Some(description.rsplit_once(": ").and_then(|(_, n)| n.trim().parse().ok())),
            _ => None,
        }
    }
}

impl From<async_nats::RequestError> for WireError {
    fn from(e: async_nats::RequestError) -> Self {
        match e.kind() {
            RequestErrorKind::NoResponders => WireError::NoResponders(e.to_string()),
            RequestErrorKind::TimedOut | RequestErrorKind::Other => WireError::Unavailable(e.to_string()),
            RequestErrorKind::InvalidSubject | RequestErrorKind::MaxPayloadExceeded => {
                WireError::Protocol(e.to_string())
            }
        }
    }
}

impl From<async_nats::PublishError> for WireError {
    fn from(e: async_nats::PublishError) -> Self {
        WireError::Unavailable(e.to_string())
    }
}

impl From<async_nats::SubscribeError> for WireError {
    fn from(e: async_nats::SubscribeError) -> Self {
        WireError::Unavailable(e.to_string())
    }
}

#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

/// A publish acknowledgement.
#[derive(Debug, Deserialize)]
pub(crate) struct PubAck {
    /// The (last) stored message's sequence.
    #[serde(default)]
    pub(crate) seq: u64,
    /// The message was not stored: its id was seen within the duplicate window.
    #[serde(default)]
    pub(crate) duplicate: bool,
}

#[derive(Debug, Deserialize)]
struct Reply<T> {
    error: Option<ApiError>,
    #[serde(flatten)]
    body: Option<T>,
}

/// Parses a JSON API reply: the body, or the error it carries.
fn parse<T: for<'de> Deserialize<'de>>(message: &Message) -> Result<T, WireError> {
    if message.status.is_some_and(|status| status.as_u16() == 503) {
        return Err(WireError::NoResponders("no stream leader?".into()));
    }
    let reply: Reply<T> = serde_json::from_slice(&message.payload)
        .map_err(|e| WireError::Protocol(format!("{e}: {}", String::from_utf8_lossy(&message.payload))))?;
    match (reply.error, reply.body) {
        (Some(e), _) => Err(WireError::Api { code: e.code, err_code: e.err_code, description: e.description }),
        (None, Some(body)) => Ok(body),
        (None, None) => Err(WireError::Protocol("empty reply".into())),
    }
}

/// One message to publish.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub(crate) subject: String,
    pub(crate) headers: HeaderMap,
    pub(crate) payload: Bytes,
}

/// Publishes one message and waits for its acknowledgement.
async fn publish_once(client: &Client, message: Outgoing) -> Result<PubAck, WireError> {
    let reply = client.request_with_headers(message.subject, message.headers, message.payload).await?;
    parse(&reply)
}

/// Publishes `messages` as one atomic batch: all are stored, or none.
/// The acknowledgement is the commit's (its `seq` is the last message's).
/// On "no responders" the whole batch is sent again under a new batch id (see
/// [`patiently`]): the request that met nobody stored nothing, and a batch
/// whose commit met nobody is never committed (the server drops it).
pub(crate) async fn publish_batch(client: &Client, messages: Vec<Outgoing>) -> Result<PubAck, WireError> {
    patiently(|| publish_batch_once(client, messages.clone())).await
}

async fn publish_batch_once(client: &Client, messages: Vec<Outgoing>) -> Result<PubAck, WireError> {
    let last = messages.len();
    if last < 2 {
        return match messages.into_iter().next() {
            Some(m) => publish_once(client, m).await,
            None => Err(WireError::Protocol("an empty batch".into())),
        };
    }
    let batch_id = uuid::Uuid::now_v7().simple().to_string();
    for (i, mut message) in messages.into_iter().enumerate() {
        let n = i + 1;
        message.headers.insert(header::BATCH_ID, batch_id.as_str());
        message.headers.insert(header::BATCH_SEQ, n.to_string().as_str());
        if n == 1 {
            // The first message is a request: the server refuses a batch it
            // cannot take (not enabled, too many in flight) here.
            let reply = client.request_with_headers(message.subject, message.headers, message.payload).await?;
            if !reply.payload.is_empty() {
                parse::<serde_json::Value>(&reply)?;
            }
        } else if n == last {
            message.headers.insert(header::BATCH_COMMIT, "1");
            let reply = client.request_with_headers(message.subject, message.headers, message.payload).await?;
            return parse(&reply);
        } else {
            client.publish_with_headers(message.subject, message.headers, message.payload).await?;
        }
    }
    Err(WireError::Protocol("batch ended without a commit".into()))
}

/// How long a request waits out "no responders" (see [`patiently`]).
const NO_RESPONDERS_PATIENCE: Duration = Duration::from_secs(5);

/// Sends a request again while JetStream answers "no responders": right
/// after a server restarts, or while a stream elects a leader, the subject
/// has no listener for a moment. Such a request reached no stream: a read
/// changed nothing, and a publish stored nothing, so both are safe to send
/// again ([`direct_get`], [`leader_last`], [`publish_batch`]).
/// Backs off from 5 ms to 250 ms, for at most [`NO_RESPONDERS_PATIENCE`];
/// any other outcome is returned at once.
async fn patiently<T, Fut>(request: impl FnMut() -> Fut) -> Result<T, WireError>
where
    Fut: Future<Output = Result<T, WireError>>,
{
    use backon::Retryable as _;
    request
        .retry(
            backon::ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(5))
                .with_max_delay(Duration::from_millis(250))
                .with_jitter()
                .with_total_delay(Some(NO_RESPONDERS_PATIENCE))
                .without_max_times(),
        )
        .sleep(tokio::time::sleep)
        .when(|e| matches!(e, WireError::NoResponders(_)))
        .await
}

/// A direct-get request (ADR-31).
#[derive(Debug, Default, Serialize)]
pub(crate) struct DirectGet {
    /// Start at (or get exactly, without `next_by_subj`) this sequence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) seq: Option<u64>,
    /// The first message at or after `seq` on this subject (wildcards allowed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) next_by_subj: Option<String>,
    /// The last message on this subject (wildcards allowed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) last_by_subj: Option<String>,
    /// Start at the first message stored at or after this time (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) start_time: Option<String>,
    /// Up to this many messages (a batch reply).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) batch: Option<usize>,
    /// Answer only from a server whose stream reached this sequence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) min_last_seq: Option<u64>,
}

/// A stored message as a direct get returns it.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) seq: u64,
    pub(crate) headers: HeaderMap,
    pub(crate) payload: Bytes,
}

impl Stored {
    fn from_message(message: Message) -> Result<Stored, WireError> {
        let headers = message.headers.unwrap_or_default();
        let seq = header_u64(&headers, header::SEQUENCE)
            .ok_or_else(|| WireError::Protocol("direct get reply without Nats-Sequence".into()))?;
        Ok(Stored { seq, headers, payload: message.payload })
    }

    /// A numeric header of the message.
    pub(crate) fn header_u64(&self, name: &str) -> Option<u64> {
        header_u64(&self.headers, name)
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name).and_then(|v| v.as_str().trim().parse().ok())
}

/// The status of a direct-get reply that carries no message.
fn status_error(message: &Message) -> Option<WireError> {
    let status = message.status?.as_u16();
    let description = message.description.clone().unwrap_or_default();
    Some(match status {
        404 => WireError::Api { code: 404, err_code: code::NO_MESSAGE, description },
        412 => WireError::Api { code: 412, err_code: code::MIN_LAST_SEQ, description },
        503 => WireError::NoResponders(description),
        408 => WireError::Unavailable(format!("request timeout: {description}")),
        code => WireError::Api { code, err_code: 0, description },
    })
}

/// One message by direct get; `None` when there is none.
pub(crate) async fn direct_get(
    client: &Client,
    stream: &str,
    request: &DirectGet,
) -> Result<Option<Stored>, WireError> {
    patiently(|| direct_get_once(client, stream, request)).await
}

async fn direct_get_once(client: &Client, stream: &str, request: &DirectGet) -> Result<Option<Stored>, WireError> {
    let body = serde_json::to_vec(request).map_err(|e| WireError::Protocol(e.to_string()))?;
    let reply = client.request(format!("$JS.API.DIRECT.GET.{stream}"), body.into()).await?;
    match status_error(&reply) {
        Some(e) if e.err_code() == Some(code::NO_MESSAGE) => Ok(None),
        Some(e) => Err(e),
        None => Stored::from_message(reply).map(Some),
    }
}

/// A batch of messages by direct get, in sequence order.
pub(crate) async fn direct_get_batch(
    client: &Client,
    stream: &str,
    request: &DirectGet,
    timeout: Duration,
) -> Result<Vec<Stored>, WireError> {
    patiently(|| direct_get_batch_once(client, stream, request, timeout)).await
}

async fn direct_get_batch_once(
    client: &Client,
    stream: &str,
    request: &DirectGet,
    timeout: Duration,
) -> Result<Vec<Stored>, WireError> {
    let body = serde_json::to_vec(request).map_err(|e| WireError::Protocol(e.to_string()))?;
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await?;
    client.publish_with_reply(format!("$JS.API.DIRECT.GET.{stream}"), inbox, body.into()).await?;
    client.flush().await.map_err(|e| WireError::Unavailable(e.to_string()))?;
    let mut messages = Vec::new();
    loop {
        let reply = tokio::time::timeout(timeout, replies.next())
            .await
            .map_err(|_| WireError::Unavailable("direct get: no reply in time".into()))?
            .ok_or_else(|| WireError::Unavailable("direct get: the connection closed".into()))?;
        if let Some(status) = reply.status {
            // 204: the end of the batch.
            if status.as_u16() == 204 {
                return Ok(messages);
            }
            return match status_error(&reply) {
                Some(e) if e.err_code() == Some(code::NO_MESSAGE) => Ok(messages),
                Some(e) => Err(e),
                None => Ok(messages),
            };
        }
        messages.push(Stored::from_message(reply)?);
    }
}

/// The last message on `subject` as the stream's leader has it (a
/// `STREAM.MSG.GET`, which only the leader answers); `None` when there is none.
pub(crate) async fn leader_last(
    client: &Client,
    stream: &str,
    subject: &str,
) -> Result<Option<(u64, HeaderMap)>, WireError> {
    patiently(|| leader_last_once(client, stream, subject)).await
}

async fn leader_last_once(client: &Client, stream: &str, subject: &str) -> Result<Option<(u64, HeaderMap)>, WireError> {
    #[derive(Deserialize)]
    struct Got {
        message: RawMessage,
    }
    #[derive(Deserialize)]
    struct RawMessage {
        seq: u64,
        #[serde(default)]
        hdrs: Option<String>,
    }
    let body = serde_json::to_vec(&serde_json::json!({ "last_by_subj": subject }))
        .map_err(|e| WireError::Protocol(e.to_string()))?;
    let reply = client.request(format!("$JS.API.STREAM.MSG.GET.{stream}"), body.into()).await?;
    match parse::<Got>(&reply) {
        Ok(got) => {
            let headers = match got.message.hdrs {
                Some(h) => parse_headers(&h)?,
                None => HeaderMap::new(),
            };
            Ok(Some((got.message.seq, headers)))
        }
        Err(e) if e.err_code() == Some(code::NO_MESSAGE) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Headers of a `STREAM.MSG.GET` reply: base64 of `NATS/1.0\r\nName: value\r\n...`.
fn parse_headers(encoded: &str) -> Result<HeaderMap, WireError> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| WireError::Protocol(format!("message headers: {e}")))?;
    let text = String::from_utf8_lossy(&raw);
    let mut headers = HeaderMap::new();
    for line in text.split("\r\n").skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim(), value.trim());
        }
    }
    Ok(headers)
}

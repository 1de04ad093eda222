//! Data subjects, whom personal data is about, and the error of every
//! refused personal-data operation (see [`personal`](crate::personal)).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::stream::StreamId;

/// The longest subject, in bytes.
pub const MAX_SUBJECT_LEN: usize = 256;

/// Why a subject name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSubject {
    /// Empty.
    #[error("a data subject must not be empty")]
    Empty,
    /// Longer than [`MAX_SUBJECT_LEN`] bytes.
    #[error("a data subject has at most {MAX_SUBJECT_LEN} bytes, this one has {0}")]
    TooLong(usize),
    /// Holds a control character (NUL included).
    #[error("a data subject must not hold control characters")]
    ControlCharacter,
}

/// Whom personal data is about: the unit of forgetting, with one key each
/// (`customer-7`, or the bank's `account-<id>`). 1 to [`MAX_SUBJECT_LEN`]
/// bytes, no control characters. A subject names a person without saying
/// anything about them: it is kept after [`KeyStore::forget`](crate::KeyStore::forget), with when and
/// by whom.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subject(String);

impl Subject {
    /// A subject named `name`.
    ///
    /// # Errors
    /// [`InvalidSubject`] for an empty, too long or control-character name.
    pub fn new(name: impl Into<String>) -> std::result::Result<Self, InvalidSubject> {
        let name = name.into();
        if name.is_empty() {
            return Err(InvalidSubject::Empty);
        }
        if name.len() > MAX_SUBJECT_LEN {
            return Err(InvalidSubject::TooLong(name.len()));
        }
        if name.chars().any(char::is_control) {
            return Err(InvalidSubject::ControlCharacter);
        }
        Ok(Subject(name))
    }

    /// The subject named after a stream (`account-42`): one person per stream.
    pub fn of_stream(stream: &StreamId) -> Self {
        // A stream id is 1 to 256 bytes of printable text: a valid subject.
        Subject(stream.as_str().to_owned())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Subject {
    type Error = InvalidSubject;
    fn try_from(name: String) -> std::result::Result<Self, InvalidSubject> {
        Subject::new(name)
    }
}

impl From<Subject> for String {
    fn from(subject: Subject) -> String {
        subject.0
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Subject {
    type Err = InvalidSubject;
    fn from_str(s: &str) -> std::result::Result<Self, InvalidSubject> {
        Subject::new(s)
    }
}

/// Why personal data could not be stored or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PersonalError {
    /// The subject was forgotten: no new personal data is stored for it.
    #[error("data subject {0} was forgotten: no personal data of theirs is stored any more")]
    Forgotten(Subject),
    /// No key was ever created for this subject (nothing to forget).
    #[error("no personal data of data subject {0} is stored")]
    UnknownSubject(Subject),
    /// An event or a state holds personal data but names no subject.
    #[error("{0} holds personal data but names no data subject (Aggregate::subject or Metadata::with_subject)")]
    NoSubject(String),
    /// Personal data was written through a store that keeps no keys.
    #[error("{0} holds personal data, and this store keeps no keys to seal it with")]
    NoKeyStore(String),
    /// A sealed value does not open with its subject's key: tampered, corrupt,
    /// or copied from another subject. It is never returned as plaintext.
    #[error("sealed personal data in {0} does not open with its subject's key (tampered or corrupt)")]
    Tampered(String),
    /// A stored key is not [`KEY_LEN`](crate::personal::KEY_LEN) bytes long.
    #[error("the stored key of data subject {0} is malformed")]
    BadKey(Subject),
    /// A subject name was refused.
    #[error(transparent)]
    InvalidSubject(#[from] InvalidSubject),
}

//! The SQLite store against the store conformance suite (on a temp file and
//! in memory), plus what only this store promises.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod helpers;
mod send;
mod sqlite;

/// Each test on its own temporary database file.
mod file {
    eslab_testing::store_conformance_tests!(crate::helpers::file_store);
    eslab_testing::side_store_conformance_tests!(crate::helpers::file_store);
    eslab_testing::repository_conformance_tests!(crate::helpers::file_store);
    eslab_testing::retention_conformance_tests!(crate::helpers::file_store);
    eslab_testing::subscription_conformance_tests!(crate::helpers::file_store);
    eslab_testing::boundary_conformance_tests!(crate::helpers::file_store);
    eslab_testing::personal_conformance_tests!(crate::helpers::file_store);
    eslab_testing::explore_conformance_tests!(crate::helpers::file_store);
}

/// Each test on its own private in-memory database.
mod memory {
    eslab_testing::store_conformance_tests!(crate::helpers::memory_store);
    eslab_testing::side_store_conformance_tests!(crate::helpers::memory_store);
    eslab_testing::repository_conformance_tests!(crate::helpers::memory_store);
    eslab_testing::retention_conformance_tests!(crate::helpers::memory_store);
    eslab_testing::subscription_conformance_tests!(crate::helpers::memory_store);
}

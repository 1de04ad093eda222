//! Integration tests of the eslab binary's library.

mod projections;

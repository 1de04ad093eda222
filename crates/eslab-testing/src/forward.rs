//! Store wrappers that change one method and forward the rest:
//! [`forward_store!`](crate::forward_store).
//!
//! A test often wraps a store to count, delay or fail one call, or only to
//! keep something alive next to it (a temp dir, a schema guard). Written by
//! hand, such a wrapper repeats every method of the store traits, and
//! one it forgets falls back to the trait's default (a `feed_head` paging
//! through the whole feed instead of the store's own) without a word. The
//! macro writes the forwarding; the wrapper writes only what it changes.
//! A wrapper that changes [`read_stream`](eslab_core::EventReader::read_stream)
//! changes [`read_stream_lean`](eslab_core::EventReader::read_stream_lean)
//! (the read of a repository's loads) the same way.
//!
//! ```
//! use eslab_core::{EventReader, RecordedEvent, Result, StreamId, Version};
//! use eslab_memory::MemoryStore;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//!
//! /// Counts stream reads; everything else goes straight to the store.
//! struct Counting<S> {
//!     inner: S,
//!     reads: AtomicUsize,
//! }
//!
//! eslab_testing::forward_store! {
//!     impl[S: EventReader] EventReader for Counting<S> => inner {
//!         async fn read_stream(&self, stream: &StreamId, from: Version, limit: usize) -> Result<Vec<RecordedEvent>> {
//!             self.reads.fetch_add(1, Ordering::SeqCst);
//!             self.inner.read_stream(stream, from, limit).await
//!         }
//!     }
//!     impl[S: eslab_core::EventAppender] EventAppender for Counting<S> => inner {}
//! }
//!
//! fn storage<T: eslab_core::EventStorage>(_: &T) {}
//! storage(&Counting { inner: MemoryStore::new(), reads: AtomicUsize::new(0) });
//! ```

/// Implements store traits for a wrapper by forwarding every method to one of
/// its fields, except the methods written out.
///
/// Blocks of the form
/// `impl[<generics and bounds>] <Traits> for <Type> => <field> { <overrides> }`:
/// - `[...]` (optional) holds what `impl<...>` would, bounds included;
/// - `<Traits>` is one or more (joined by `+`) of `EventAppender`,
///   `EventReader`, `SnapshotStore`, `CheckpointStore`, `StreamRetention` and
///   `WakeUps` (bare: the macro names them through `eslab_core`);
/// - `<field>` is the field to forward to (a name, or `0` for a tuple struct);
/// - `<overrides>` are `async fn` items of the block's one trait (a block of
///   several traits has none), written as in a hand-written impl (import the
///   types they name); every method not among them is forwarded, defaulted
///   ones (`append`, `feed_head`) included.
///
/// See [the module docs](crate::forward) for an example.
#[macro_export]
macro_rules! forward_store {
    (@one [$($generics:tt)*] $trait:ident $ty:ty, $field:tt, {
        $( $(#[$attr:meta])* async fn $name:ident $params:tt -> $ret:ty $body:block )*
    }) => {
        impl<$($generics)*> $crate::__eslab_core::$trait for $ty {
            $( $(#[$attr])* async fn $name $params -> $ret $body )*
            $crate::__forward_methods!($trait, $field, [$($name)*]);
        }
    };
    (@each $generics:tt $ty:ty, $field:tt, $overrides:tt, $($trait:ident)+) => {
        $( $crate::forward_store!(@one $generics $trait $ty, $field, $overrides); )+
    };
    ($(impl $([$($generics:tt)*])? $trait:ident $(+ $more:ident)* for $ty:ty => $field:tt $overrides:tt)*) => {
        $( $crate::forward_store!(@each [$($($generics)*)?] $ty, $field, $overrides, $trait $($more)*); )*
    };
}

/// The forwarding methods of one trait, less the overridden ones.
#[doc(hidden)]
#[macro_export]
macro_rules! __forward_methods {
    (EventAppender, $f:tt, $skip:tt) => {
        $crate::__forward_fn!($skip $f EventAppender::append(
            stream: &$crate::__eslab_core::StreamId,
            expected: $crate::__eslab_core::ExpectedVersion,
            events: ::std::vec::Vec<$crate::__eslab_core::NewEvent>,
        ) -> $crate::__eslab_core::AppendResult);
        $crate::__forward_fn!($skip $f EventAppender::append_streams(
            appends: ::std::vec::Vec<$crate::__eslab_core::StreamAppend>,
        ) -> ::std::vec::Vec<$crate::__eslab_core::AppendResult>);
        $crate::__forward_fn!($skip $f EventAppender::append_if(
            appends: ::std::vec::Vec<$crate::__eslab_core::StreamAppend>,
            condition: $crate::__eslab_core::AppendCondition,
        ) -> ::std::vec::Vec<$crate::__eslab_core::AppendResult>);
    };
    (EventReader, $f:tt, $skip:tt) => {
        fn personal_keys(
            &self,
        ) -> ::core::option::Option<::std::sync::Arc<dyn $crate::__eslab_core::KeyStore>> {
            $crate::__eslab_core::EventReader::personal_keys(&self.$f)
        }
        $crate::__forward_fn!($skip $f EventReader::read_stream(
            stream: &$crate::__eslab_core::StreamId,
            from: $crate::__eslab_core::Version,
            limit: usize,
        ) -> ::std::vec::Vec<$crate::__eslab_core::RecordedEvent>);
        $crate::__forward_fn!($skip $f EventReader::read_stream_lean(
            stream: &$crate::__eslab_core::StreamId,
            from: $crate::__eslab_core::Version,
            limit: usize,
        ) -> ::std::vec::Vec<$crate::__eslab_core::LeanEvent>);
        $crate::__forward_fn!($skip $f EventReader::read_feed(
            filter: &$crate::__eslab_core::FeedFilter,
            after: $crate::__eslab_core::Checkpoint,
            limit: usize,
        ) -> ::std::vec::Vec<$crate::__eslab_core::RecordedEvent>);
        $crate::__forward_fn!($skip $f EventReader::stream_version(
            stream: &$crate::__eslab_core::StreamId,
        ) -> $crate::__eslab_core::Version);
        $crate::__forward_fn!($skip $f EventReader::read_query(
            query: &$crate::__eslab_core::Query,
        ) -> $crate::__eslab_core::QueryRead);
        $crate::__forward_fn!($skip $f EventReader::feed_head(
            filter: &$crate::__eslab_core::FeedFilter,
        ) -> ::core::option::Option<$crate::__eslab_core::FeedHead>);
    };
    (Explore, $f:tt, $skip:tt) => {
        $crate::__forward_fn!($skip $f Explore::categories(
            after: ::core::option::Option<&str>,
            limit: usize,
        ) -> ::std::vec::Vec<$crate::__eslab_core::CategorySummary>);
        $crate::__forward_fn!($skip $f Explore::streams(
            category: &str,
            after: ::core::option::Option<&$crate::__eslab_core::StreamId>,
            limit: usize,
        ) -> ::std::vec::Vec<$crate::__eslab_core::StreamSummary>);
        $crate::__forward_fn!($skip $f Explore::correlated(
            correlation_id: $crate::__uuid::Uuid,
            after: $crate::__eslab_core::Position,
            limit: usize,
        ) -> ::std::vec::Vec<$crate::__eslab_core::RecordedEvent>);
    };
    (SnapshotStore, $f:tt, $skip:tt) => {
        $crate::__forward_fn!($skip $f SnapshotStore::load_snapshot(
            stream: &$crate::__eslab_core::StreamId,
        ) -> ::core::option::Option<$crate::__eslab_core::Snapshot>);
        $crate::__forward_fn!($skip $f SnapshotStore::save_snapshot(snapshot: $crate::__eslab_core::Snapshot,) -> ());
    };
    (CheckpointStore, $f:tt, $skip:tt) => {
        $crate::__forward_fn!($skip $f CheckpointStore::load_checkpoint(name: &str,) -> $crate::__eslab_core::Checkpoint);
        $crate::__forward_fn!($skip $f CheckpointStore::save_checkpoint(
            name: &str,
            checkpoint: $crate::__eslab_core::Checkpoint,
        ) -> ());
        $crate::__forward_fn!($skip $f CheckpointStore::acquire_lease(
            name: &str,
            owner: &str,
            ttl: ::std::time::Duration,
        ) -> bool);
        $crate::__forward_fn!($skip $f CheckpointStore::release_lease(name: &str, owner: &str,) -> ());
    };
    (WakeUps, $f:tt, $skip:tt) => {
        $crate::__forward_fn!($skip $f WakeUps::wake_ups() => $crate::__eslab_core::WakeUpStream);
    };
    (StreamRetention, $f:tt, $skip:tt) => {
        $crate::__forward_fn!($skip $f StreamRetention::purge_category_before(
            category: &str,
            recorded_before: $crate::__time::OffsetDateTime,
            limit: usize,
        ) -> u64);
    };
}

/// One forwarding method, calling the field's own, unless `name` is
/// overridden: `fn name(&self, args) -> impl Future<Output = Result<ret>> +
/// Send` for `-> ret`, `Output = output` for `=> output`.
#[doc(hidden)]
#[macro_export]
macro_rules! __forward_fn {
    ($skip:tt $f:tt $trait:ident :: $name:ident ($($arg:ident : $ty:ty,)*) -> $ret:ty) => {
        $crate::__forward_fn!($skip $f $trait::$name($($arg: $ty,)*) => $crate::__eslab_core::Result<$ret>);
    };
    ($skip:tt $f:tt $trait:ident :: $name:ident ($($arg:ident : $ty:ty,)*) => $output:ty) => {
        $crate::__forward_unless!($name $skip
            fn $name(
                &self,
                $($arg: $ty),*
            ) -> impl ::core::future::Future<Output = $output> + ::core::marker::Send {
                $crate::__eslab_core::$trait::$name(&self.$f, $($arg),*)
            }
        );
    };
}

/// `__forward_unless!(method [overridden...] item...)`: the item, unless
/// `method` is among the overridden names. `macro_rules!` cannot compare two
/// identifiers, so each method of the traits gets an arm of its own.
#[doc(hidden)]
#[macro_export]
macro_rules! __forward_unless {
    ($m:ident [] $($item:tt)*) => { $($item)* };
    (append [append $($rest:ident)*] $($item:tt)*) => {};
    (append_streams [append_streams $($rest:ident)*] $($item:tt)*) => {};
    (append_if [append_if $($rest:ident)*] $($item:tt)*) => {};
    (read_stream [read_stream $($rest:ident)*] $($item:tt)*) => {};
    (read_stream_lean [read_stream_lean $($rest:ident)*] $($item:tt)*) => {};
    (read_query [read_query $($rest:ident)*] $($item:tt)*) => {};
    (categories [categories $($rest:ident)*] $($item:tt)*) => {};
    (streams [streams $($rest:ident)*] $($item:tt)*) => {};
    (correlated [correlated $($rest:ident)*] $($item:tt)*) => {};
    (read_feed [read_feed $($rest:ident)*] $($item:tt)*) => {};
    (stream_version [stream_version $($rest:ident)*] $($item:tt)*) => {};
    (feed_head [feed_head $($rest:ident)*] $($item:tt)*) => {};
    (load_snapshot [load_snapshot $($rest:ident)*] $($item:tt)*) => {};
    (save_snapshot [save_snapshot $($rest:ident)*] $($item:tt)*) => {};
    (load_checkpoint [load_checkpoint $($rest:ident)*] $($item:tt)*) => {};
    (save_checkpoint [save_checkpoint $($rest:ident)*] $($item:tt)*) => {};
    (acquire_lease [acquire_lease $($rest:ident)*] $($item:tt)*) => {};
    (release_lease [release_lease $($rest:ident)*] $($item:tt)*) => {};
    (purge_category_before [purge_category_before $($rest:ident)*] $($item:tt)*) => {};
    (wake_ups [wake_ups $($rest:ident)*] $($item:tt)*) => {};
    ($m:ident [$other:ident $($rest:ident)*] $($item:tt)*) => {
        $crate::__forward_unless!($m [$($rest)*] $($item)*);
    };
}

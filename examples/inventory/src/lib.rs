//! # inventory
//!
//! A second domain on eslab, written only against its public API: a
//! [`Product`] aggregate (register, receive, reserve, release), an idempotent
//! reservation, the [`StockLevels`] projection on SQLite and PostgreSQL, and
//! a live subscription. [`story`] runs it all; `docs/guide.md` walks through it.
//!
//! ```
//! use eslab_core::Aggregate;
//! use inventory::{Product, ProductCommand, ProductEvent, StockError};
//!
//! let lamp = Product::fold(&[
//!     ProductEvent::Registered { name: "Desk lamp".into() },
//!     ProductEvent::Received { quantity: 2 },
//! ]);
//! let refused = lamp.decide(&ProductCommand::Reserve { quantity: 3 });
//! assert_eq!(refused, Err(StockError::Insufficient { available: 2 }));
//! ```

mod product;
mod stock;
mod story;

use eslab_core::{CommandOptions, IdempotencyKey, InvalidKey, Metadata, Version};
use serde::{Deserialize, Serialize};

pub use product::{Product, ProductCommand, ProductEvent, StockError};
pub use stock::{StockLevel, StockLevels, StockTx, stock_level};
pub use story::{Told, run, story};

/// What a command answers (stored with its idempotency key, if it has one:
/// every retry gets the first answer again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// Units available after the command.
    pub available: u32,
    /// The product's version after the command.
    pub version: u64,
}

/// The answer of a command that left `product` at `version`.
pub fn answer(product: &Product, version: Version) -> Answer {
    Answer { available: product.available(), version: version.get() }
}

/// A reservation of `quantity` units of `sku` for `order`, idempotent: the
/// key names the order line, the fingerprint covers the request, so a retry
/// gets the first answer and another request with the same key is refused.
///
/// # Errors
/// [`InvalidKey`] for an empty key or one longer than 255 bytes.
pub fn reservation(sku: &str, order: &str, quantity: u32) -> Result<(ProductCommand, CommandOptions), InvalidKey> {
    let key = IdempotencyKey::new(&format!("{sku}/{order}"), &[sku.as_bytes(), &quantity.to_be_bytes()])?;
    let options = CommandOptions::new(Metadata::now().with_actor(order)).existing().idempotent(key);
    Ok((ProductCommand::Reserve { quantity }, options))
}

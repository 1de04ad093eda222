//! The `Product` aggregate: stock on hand and reserved, decided by pure rules.

use eslab_core::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// A product's stock. `Default` is the product before it is registered.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Product {
    /// Its name (`None` until registered).
    pub name: Option<String>,
    /// Units in the warehouse.
    pub on_hand: u32,
    /// Units promised to orders (never more than `on_hand`).
    pub reserved: u32,
}

impl Product {
    /// Units that can still be reserved.
    pub fn available(&self) -> u32 {
        self.on_hand.saturating_sub(self.reserved)
    }
}

/// What can be asked of a product.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // the fields say it: a name, or a number of units
pub enum ProductCommand {
    /// Start selling it.
    Register { name: String },
    /// Stock arrived.
    Receive { quantity: u32 },
    /// Promise units to an order.
    Reserve { quantity: u32 },
    /// Give reserved units back.
    Release { quantity: u32 },
}

/// What happened to a product. The variant names are the stored event types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // the fields say it: a name, or a number of units
pub enum ProductEvent {
    Registered { name: String },
    Received { quantity: u32 },
    Reserved { quantity: u32 },
    Released { quantity: u32 },
}

impl DomainEvent for ProductEvent {
    const EVENT_TYPES: &'static [&'static str] = &["Registered", "Received", "Reserved", "Released"];

    fn event_type(&self) -> &'static str {
        match self {
            ProductEvent::Registered { .. } => "Registered",
            ProductEvent::Received { .. } => "Received",
            ProductEvent::Reserved { .. } => "Reserved",
            ProductEvent::Released { .. } => "Released",
        }
    }
}

/// Why a product refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StockError {
    /// Registered twice.
    #[error("the product is already registered")]
    AlreadyRegistered,
    /// Any other command before the registration.
    #[error("the product is not registered")]
    NotRegistered,
    /// A quantity of 0.
    #[error("quantities must be positive")]
    ZeroQuantity,
    /// A reservation beyond what is available.
    #[error("only {available} available")]
    Insufficient {
        /// What could be reserved.
        available: u32,
    },
    /// A release beyond what is reserved.
    #[error("only {reserved} reserved")]
    NotReserved {
        /// What could be released.
        reserved: u32,
    },
    /// More stock than a `u32` counts.
    #[error("the stock would overflow")]
    Overflow,
}

impl Aggregate for Product {
    const KIND: &'static str = "product";
    type Command = ProductCommand;
    type Event = ProductEvent;
    type Error = StockError;

    fn decide(&self, command: &ProductCommand) -> Result<Vec<ProductEvent>, StockError> {
        use ProductCommand as C;
        let event = match command {
            C::Register { .. } if self.name.is_some() => return Err(StockError::AlreadyRegistered),
            C::Register { name } => ProductEvent::Registered { name: name.clone() },
            _ if self.name.is_none() => return Err(StockError::NotRegistered),
            C::Receive { quantity: 0 } | C::Reserve { quantity: 0 } | C::Release { quantity: 0 } => {
                return Err(StockError::ZeroQuantity);
            }
            C::Receive { quantity } => {
                self.on_hand.checked_add(*quantity).ok_or(StockError::Overflow)?;
                ProductEvent::Received { quantity: *quantity }
            }
            C::Reserve { quantity } if *quantity > self.available() => {
                return Err(StockError::Insufficient { available: self.available() });
            }
            C::Reserve { quantity } => ProductEvent::Reserved { quantity: *quantity },
            C::Release { quantity } if *quantity > self.reserved => {
                return Err(StockError::NotReserved { reserved: self.reserved });
            }
            C::Release { quantity } => ProductEvent::Released { quantity: *quantity },
        };
        Ok(vec![event])
    }

    fn evolve(&mut self, event: &ProductEvent) {
        match event {
            ProductEvent::Registered { name } => self.name = Some(name.clone()),
            ProductEvent::Received { quantity } => self.on_hand = self.on_hand.saturating_add(*quantity),
            ProductEvent::Reserved { quantity } => self.reserved = self.reserved.saturating_add(*quantity),
            ProductEvent::Released { quantity } => self.reserved = self.reserved.saturating_sub(*quantity),
        }
    }
}
